"""ALS matrix factorisation for teaching, NumPy only: R ~ mu + b_user + c_item + P @ Q.T.

Learned from a small fraction of observed entries: the same "two thin factors" shape as
LoRA's B and A, fitted by alternating ridge regressions, each of which has a closed-form
solution. `choose_by_validation` picks its rank and regularisation on ratings held out
from the training set, never on the test set. Deterministic given a seed; ratings are three
parallel arrays (users, items, ratings) with 0-based integer ids. The SVD and LoRA half of
the lessons' maths is lab_utils/teaching/lowrank.py.
"""

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

def rmse(predictions, targets) -> float:
    diff = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))


@dataclass
class FactorModel:
    """r_hat(u, i) = global_mean + user_bias[u] + item_bias[i] + user_factors[u] . item_factors[i]."""

    global_mean: float
    user_bias: np.ndarray  # (n_users,)
    item_bias: np.ndarray  # (n_items,)
    user_factors: np.ndarray  # (n_users, rank)
    item_factors: np.ndarray  # (n_items, rank)
    clip: tuple | None = None  # e.g. (1, 5): a prediction outside the rating scale is always worse

    @property
    def rank(self) -> int:
        return self.user_factors.shape[1]

    def predict(self, users, items):
        users, items = np.asarray(users), np.asarray(items)
        interaction = np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])
        pred = self.global_mean + self.user_bias[users] + self.item_bias[items] + interaction
        return np.clip(pred, *self.clip) if self.clip else pred

    def evaluate(self, ratings) -> float:
        users, items, values = ratings
        return rmse(self.predict(users, items), values)


def global_mean_baseline(train, n_users: int, n_items: int, clip=None) -> FactorModel:
    """Predict the mean training rating for everything: the number every model must beat."""
    mean = float(np.mean(train[2]))
    return FactorModel(mean, np.zeros(n_users), np.zeros(n_items), np.zeros((n_users, 0)), np.zeros((n_items, 0)), clip)


def bias_baseline(train, n_users: int, n_items: int, bias_reg: float = 10.0, n_iters: int = 10, clip=None):
    """mu + b_user + c_item fitted by ALS: a rank-0 factorisation (how generous a user, how good a film)."""
    model, _ = als_fit(train, n_users, n_items, rank=0, bias_reg=bias_reg, n_iters=n_iters, clip=clip)
    return model


class RowGroups(NamedTuple):
    counts: np.ndarray  # ratings per row (user or item)
    blocks: list  # per count bucket: (row ids, rating indices (rows, width), other side's ids (rows, width))


def _groups(own, other, n_own: int, n_other: int) -> RowGroups:
    """Each user's (or item's) ratings as padded blocks, for batched per-row least squares.

    Rows are bucketed by rating count (four buckets per doubling of the count) and
    each bucket becomes a (rows, width) table of rating indices and of the other
    side's ids, padded with an index that points at an all-zero row. Every Gram
    matrix then comes from one batched matmul per bucket instead of a Python loop
    over rows; the padding is under a fifth of each block (about 10% on MovieLens).
    """
    own, other = np.asarray(own), np.asarray(other)
    order = np.argsort(own, kind="stable")
    counts = np.bincount(own, minlength=n_own)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    bucket = np.ceil(4 * np.log2(np.maximum(counts, 1))).astype(np.int64)
    padded_order = np.append(order, len(own))  # position len(own): the padding rating
    padded_other = np.append(other, n_other)  # id n_other: the all-zero feature row
    blocks = []
    for b in np.unique(bucket[counts > 0]):
        rows = np.flatnonzero((bucket == b) & (counts > 0))
        offsets = np.arange(counts[rows].max())
        inside = offsets[None, :] < counts[rows][:, None]
        positions = np.where(inside, starts[rows][:, None] + offsets[None, :], len(own))
        ratings = padded_order[positions]
        blocks.append((rows, ratings, padded_other[ratings]))
    return RowGroups(counts, blocks)


def _ridge_side(groups: RowGroups, table, targets, penalty):
    """Solve every row's ridge system (F_u^T F_u + diag(penalty_u)) x_u = F_u^T t_u at once.

    F_u holds the other side's feature rows (from `table`) for the ratings of row u,
    t_u their targets. The Gram matrices come from one batched matmul per count
    bucket (see `_groups`) and all systems go to one batched `np.linalg.solve`.
    The 1e-10 floor keeps a row with no ratings (or reg=0) solvable; with reg > 0 it never binds.
    """
    dim = table.shape[1]
    table = np.vstack([table, np.zeros((1, dim))])  # the padding's features: zero, so it adds nothing
    targets = np.append(targets, 0.0)
    grams = np.zeros((len(groups.counts), dim, dim))
    rhs = np.zeros((len(groups.counts), dim))
    for rows, ratings, others in groups.blocks:
        block = table[others]  # (rows, width, dim)
        block_t = block.transpose(0, 2, 1)
        grams[rows] = np.matmul(block_t, block)
        rhs[rows] = np.matmul(block_t, targets[ratings][..., None])[..., 0]
    diag = np.arange(dim)
    grams[:, diag, diag] += np.maximum(penalty, 1e-10)
    return np.linalg.solve(grams, rhs[..., None])[..., 0]


def _penalties(counts, rank: int, reg: float, bias_reg: float, weighted_reg: bool, use_biases: bool):
    """Diagonal of each row's ridge penalty: [bias_reg, reg * w, ..., reg * w] with w = n ratings (ALS-WR) or 1."""
    weight = np.maximum(counts, 1) if weighted_reg else np.ones_like(counts)
    factor_part = np.repeat((reg * weight)[:, None].astype(np.float64), rank, axis=1)
    if not use_biases:
        return factor_part
    return np.hstack([np.full((len(counts), 1), float(bias_reg)), factor_part])


def regularised_objective(model: FactorModel, train, reg: float, bias_reg: float, weighted_reg: bool = True) -> float:
    """The loss ALS minimises, per training rating: squared error + the ridge penalties.

    Each ALS half-step solves this exactly for one side with the other fixed,
    so this number can never go up from one iteration to the next (the RMSE alone can).
    """
    users, items, values = train
    # the loss is on the raw model: clipping to the rating scale is only for reported predictions
    raw = FactorModel(model.global_mean, model.user_bias, model.item_bias, model.user_factors, model.item_factors)
    pred = raw.predict(users, items)
    n_users, n_items = len(model.user_bias), len(model.item_bias)
    user_w = np.maximum(np.bincount(users, minlength=n_users), 1) if weighted_reg else np.ones(n_users)
    item_w = np.maximum(np.bincount(items, minlength=n_items), 1) if weighted_reg else np.ones(n_items)
    penalty = reg * (np.sum(user_w * np.sum(model.user_factors**2, axis=1))
                     + np.sum(item_w * np.sum(model.item_factors**2, axis=1)))
    penalty += bias_reg * (np.sum(model.user_bias**2) + np.sum(model.item_bias**2))
    return float((np.sum((pred - values) ** 2) + penalty) / len(values))


def als_fit(
    train,
    n_users: int,
    n_items: int,
    *,
    rank: int = 10,
    reg: float = 0.1,
    bias_reg: float = 10.0,
    n_iters: int = 15,
    weighted_reg: bool = True,
    use_biases: bool = True,
    center: bool = True,
    init_scale: float = 0.1,
    seed: int = 0,
    valid=None,
    clip=None,
    track: bool = True,
):
    """Alternating least squares for explicit ratings, with user/item biases and L2 regularisation.

    Minimises  sum_(u,i) (r_ui - mu - b_u - c_i - p_u . q_i)^2
               + reg * sum_u w_u |p_u|^2 + reg * sum_i w_i |q_i|^2 + bias_reg * (|b|^2 + |c|^2)
    where mu is the training mean and w = the row's number of ratings when
    `weighted_reg` (ALS-WR, as Spark does: a user with many ratings can afford
    more detail) or 1. `center=False` sets mu = 0; with `use_biases=False` too
    this is exactly Spark MLlib's ALS model. With the item side fixed, each user's (b_u, p_u) is a
    small ridge regression on the items that user rated; then the roles swap.

    Returns (model, history) where history holds per-iteration train/valid RMSE,
    the regularised objective and the elapsed seconds (`track=False` skips
    computing them, for fits where only the final model matters; history is then empty).
    """
    users, items, values = (np.asarray(a) for a in train)
    values = values.astype(np.float64)
    rng = np.random.default_rng(seed)
    mu = float(values.mean()) if center else 0.0
    user_groups = _groups(users, items, n_users, n_items)
    item_groups = _groups(items, users, n_items, n_users)
    user_pen = _penalties(user_groups.counts, rank, reg, bias_reg, weighted_reg, use_biases)
    item_pen = _penalties(item_groups.counts, rank, reg, bias_reg, weighted_reg, use_biases)
    model = FactorModel(
        mu, np.zeros(n_users), np.zeros(n_items),
        np.zeros((n_users, rank)), rng.normal(0.0, init_scale, (n_items, rank)), clip,
    )
    history = {"iteration": [], "train_rmse": [], "valid_rmse": [], "objective": [], "seconds": []}
    start = time.perf_counter()
    for it in range(1, n_iters + 1):
        # Thousands of tiny matmuls: BLAS threads only contend for the cores (4-10x slower
        # measured on a busy 2-core machine), so ALS runs them on one thread.
        with threadpool_limits(limits=1, user_api="blas"):
            _update_side(model, "user", items, values, user_groups, user_pen, use_biases)
            _update_side(model, "item", users, values, item_groups, item_pen, use_biases)
        if not track:
            continue
        history["iteration"].append(it)
        history["train_rmse"].append(model.evaluate((users, items, values)))
        history["valid_rmse"].append(model.evaluate(valid) if valid is not None else None)
        history["objective"].append(regularised_objective(model, (users, items, values), reg, bias_reg, weighted_reg))
        history["seconds"].append(time.perf_counter() - start)
    return model, history


def holdout_split(ratings, fraction: float, seed: int = 0):
    """(fit part, validation part) of (users, items, ratings): a random `fraction` of the ratings held out."""
    users, items, values = (np.asarray(a) for a in ratings)
    held = np.random.default_rng(seed).random(len(values)) < fraction
    return (users[~held], items[~held], values[~held]), (users[held], items[held], values[held])


def choose_by_validation(train, n_users: int, n_items: int, *, ranks, regs, valid_fraction: float = 0.1,
                         seed: int = 0, **fit_options) -> dict:
    """The (rank, reg) with the lowest validation RMSE, the validation set carved out of `train`.

    The test set is never looked at: a setting chosen on it would make its RMSE an
    optimistic guess, not a measurement. Each candidate is fitted on the other
    1 - valid_fraction of the training ratings (`fit_options` go to als_fit: bias_reg,
    n_iters, clip, ...); refit the chosen one on the whole training split afterwards.
    Returns {"rank", "reg", "valid_rmse", "grid": [{"rank", "reg", "valid_rmse"}, ...]}.
    """
    fit_part, valid = holdout_split(train, valid_fraction, seed)
    grid = []
    for rank in ranks:
        for reg in regs:
            model, _ = als_fit(fit_part, n_users, n_items, rank=int(rank), reg=float(reg), seed=seed, track=False,
                               **fit_options)
            grid.append({"rank": int(rank), "reg": float(reg), "valid_rmse": model.evaluate(valid)})
    best = min(grid, key=lambda candidate: candidate["valid_rmse"])
    return {**best, "grid": grid}


def _update_side(model: FactorModel, side: str, other, values, groups, penalty, use_biases: bool) -> None:
    """One half-step: re-solve every user's (or every item's) bias and factors, the other side fixed."""
    if side == "user":
        other_bias, other_factors = model.item_bias, model.item_factors
    else:
        other_bias, other_factors = model.user_bias, model.user_factors
    targets = values - model.global_mean - other_bias[other]
    table = other_factors
    if use_biases:  # a constant-1 feature makes the bias one more ridge coefficient
        table = np.hstack([np.ones((len(other_factors), 1)), other_factors])
    solution = _ridge_side(groups, table, targets, penalty)
    bias, factors = (solution[:, 0], solution[:, 1:]) if use_biases else (np.zeros(len(solution)), solution)
    if side == "user":
        model.user_bias, model.user_factors = bias, factors
    else:
        model.item_bias, model.item_factors = bias, factors


