"""Explicit ratings for the ALS lesson: MovieLens-100K from LAB_DATA_DIR, or a synthetic low-rank matrix.

Ratings are not chat conversations, so this loader returns NumPy arrays, not
the chat-messages `datasets.Dataset` the text loaders return. One
`RatingsSplit` holds a train and a test set, each a tuple of three parallel
arrays (users, items, ratings) with 0-based integer ids.

MovieLens-100K (GroupLens) is never bundled: put the standard `ml-100k/`
folder under LAB_DATA_DIR. Files (tab-separated, no header, one rating a line:
user id | item id | rating 1..5 | unix timestamp):

    u1.base, u1.test  ... u5.base, u5.test: the five 80/20 splits whose test sets are
                      disjoint; a split reads only its own two files
    u.data            all 100,000 ratings; not read for a split: the split's two files
                      already hold every rating (base + test = u.data), so the id ranges
                      come from them. (A widely shared copy of ml-100k has extra rows
                      with user id 0 in u.data; its splits are intact and still run.)

Ids in the files are 1-based; they become `id - 1`. A row that is not four
integers with a rating in 1..5 is a `DataError` naming file and row (a
corrupted file, not something to skip). Blank lines and repeated
(user, item) pairs within a file are recorded in the `SkipReport`.

The synthetic default is R = mu + b_u + c_i + P Q^T + noise with a known true
rank and noise level, so a student can see ALS recover it down to the noise.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_loaders.common import SkipReport, data_error
from lab_utils.core.paths import LabPathError, data_dir
from lab_utils.core.errors import ParamError

ML100K_FOLDER = "ml-100k"
ML100K_SPLITS = ("u1", "u2", "u3", "u4", "u5")
RATING_RANGE = (1.0, 5.0)


@dataclass
class RatingsSplit:
    name: str  # "u1".."u5" or "synthetic"
    train: tuple  # (users, items, ratings) arrays
    test: tuple
    n_users: int
    n_items: int
    rating_range: tuple | None = None  # clip predictions to it (None: unbounded synthetic ratings)
    truth: np.ndarray | None = None  # synthetic only: the noise-free matrix
    true_rank: int | None = None
    noise_std: float | None = None
    skips: SkipReport = field(default_factory=SkipReport)

    def summary(self) -> str:
        n_train, n_test = len(self.train[2]), len(self.test[2])
        density = n_train / (self.n_users * self.n_items)
        return (f"{self.name}: {self.n_users} users x {self.n_items} items, {n_train} train / {n_test} test "
                f"ratings ({density:.1%} of the matrix observed in train)")


# ------------------------------------------------------------------ MovieLens


def ml100k_folder(folder=None, split: str = "u1") -> Path:
    """The ml-100k folder: `folder` if given, else $LAB_DATA_DIR/ml-100k; one clear error if missing.

    The folder counts as found when it holds the split's training file; a missing
    test file is reported by read_ratings_file, naming that file.
    """
    path = Path(folder).expanduser() if folder else data_dir() / ML100K_FOLDER
    if not (path / f"{split}.base").is_file():
        raise LabPathError(
            f"MovieLens-100K not found: expected '{path / f'{split}.base'}'. Download ml-100k.zip from GroupLens, "
            f"unzip it and set LAB_DATA_DIR to the folder that contains '{ML100K_FOLDER}/' (now: {data_dir()})."
        )
    return path.resolve()


def read_ratings_file(path, skips: SkipReport | None = None):
    """Parse one tab-separated MovieLens ratings file into 0-based (users, items, ratings) arrays."""
    path = Path(path)
    if not path.is_file():
        raise LabPathError(f"MovieLens file '{path}' not found; LAB_DATA_DIR (now: {data_dir()}) must hold the full "
                           f"'{ML100K_FOLDER}/' folder with u1.base..u5.test.")
    skips = skips if skips is not None else SkipReport()
    users, items, ratings, seen = [], [], [], set()
    for row, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            skips.skip(path.name, row, "blank line")
            continue
        user, item, rating = _parse_row(path, row, line)
        if (user, item) in seen:
            skips.skip(path.name, row, "repeated user-item pair", line)
            continue
        seen.add((user, item))
        users.append(user - 1)
        items.append(item - 1)
        ratings.append(rating)
    if not ratings:
        raise data_error(path, "no ratings in file (expected lines 'user<TAB>item<TAB>rating<TAB>timestamp')")
    skips.kept += len(ratings)
    return np.array(users, dtype=np.int64), np.array(items, dtype=np.int64), np.array(ratings, dtype=np.float64)


def _parse_row(path, row: int, line: str):
    fields = line.split("\t")
    if len(fields) != 4:
        raise data_error(path, f"expected 4 tab-separated fields (user, item, rating, timestamp), "
                               f"got {len(fields)}: {line[:60]!r}", row)
    names = ("user", "item", "rating", "timestamp")
    try:
        user, item, rating, _ = (int(v) for v in fields)
    except ValueError:
        bad = next(n for n, v in zip(names, fields) if not v.strip().lstrip("-").isdigit())
        raise data_error(path, f"expected an integer, got {fields[names.index(bad)]!r}", row, bad) from None
    if user < 1 or item < 1:
        raise data_error(path, "ids are 1-based positive integers", row, "user" if user < 1 else "item")
    if not RATING_RANGE[0] <= rating <= RATING_RANGE[1]:
        raise data_error(path, f"expected a rating in 1..5, got {rating}", row, "rating")
    return user, item, rating


def load_ml100k_split(split: str = "u1", folder=None) -> RatingsSplit:
    """One of the five official 80/20 splits (u1..u5): u<k>.base to train, u<k>.test to test."""
    if split not in ML100K_SPLITS:
        raise ParamError(f"unknown MovieLens-100K split '{split}'; expected one of {list(ML100K_SPLITS)}")
    root = ml100k_folder(folder, split)
    skips = SkipReport()
    train = read_ratings_file(root / f"{split}.base", skips)
    test = read_ratings_file(root / f"{split}.test", skips)
    # The id ranges from the split itself: base + test hold every rating, so u.data adds nothing
    # (and a damaged u.data must not stop a split whose own files are sound).
    n_users = int(max(train[0].max(), test[0].max())) + 1
    n_items = int(max(train[1].max(), test[1].max())) + 1
    return RatingsSplit(split, train, test, n_users, n_items, rating_range=RATING_RANGE, skips=skips)


# ------------------------------------------------------------------ synthetic


def synthetic_ratings(
    n_users: int = 500,
    n_items: int = 400,
    true_rank: int = 5,
    density: float = 0.3,
    noise_std: float = 0.5,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> RatingsSplit:
    """A low-rank ratings matrix plus Gaussian noise, of which a random `density` fraction is observed.

    mu = 3.5, biases ~ N(0, 0.3^2) and N(0, 0.5^2), factors scaled so the
    interaction term has standard deviation ~1 whatever the rank. The best any
    model can do on the test set is an RMSE of `noise_std`.
    """
    rng = np.random.default_rng(seed)
    user_bias = rng.normal(0.0, 0.3, n_users)
    item_bias = rng.normal(0.0, 0.5, n_items)
    scale = true_rank**-0.25  # each p.q sums true_rank products of N(0, scale^2) pairs: variance 1
    p = rng.normal(0.0, scale, (n_users, true_rank))
    q = rng.normal(0.0, scale, (n_items, true_rank))
    truth = 3.5 + user_bias[:, None] + item_bias[None, :] + p @ q.T
    observed = np.flatnonzero(rng.random(n_users * n_items) < density)
    users, items = np.divmod(observed, n_items)
    ratings = truth[users, items] + rng.normal(0.0, noise_std, len(observed))
    is_test = rng.random(len(observed)) < test_fraction
    train = (users[~is_test], items[~is_test], ratings[~is_test])
    test = (users[is_test], items[is_test], ratings[is_test])
    return RatingsSplit(
        "synthetic", train, test, n_users, n_items,
        truth=truth, true_rank=true_rank, noise_std=noise_std,
        skips=SkipReport(kept=len(observed)),
    )
