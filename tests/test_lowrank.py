"""Truncated SVD facts, ALS guarantees and recovery, the MovieLens loader, the Spark comparison."""

import importlib.util
import json

import numpy as np
import pytest

from data_loaders.common import DataError
from data_loaders.movielens import load_ml100k_split, read_ratings_file, synthetic_ratings
from lab_utils.teaching import als, lowrank
from lab_utils.core.paths import LabPathError


def random_matrix(m=40, n=30, seed=0):
    return np.random.default_rng(seed).normal(size=(m, n))


# ------------------------------------------------------------------------- SVD


@pytest.mark.parametrize("rank", [0, 1, 3, 10, 29, 30])
def test_eckart_young_error_is_the_dropped_singular_values(rank):
    a = random_matrix()
    u, s, vt = lowrank.svd(a)
    error = lowrank.frobenius_error(a, lowrank.reconstruct(u, s, vt, rank))
    assert error == pytest.approx(np.sqrt(np.sum(s[rank:] ** 2)), rel=1e-10, abs=1e-10)
    assert error == pytest.approx(lowrank.eckart_young_error(s, rank), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("rank", [1, 2, 5, 17])
def test_rank_k_reconstruction_has_rank_k(rank):
    approx = lowrank.low_rank_approx(random_matrix(seed=1), rank)
    assert np.linalg.matrix_rank(approx) == rank
    u_k, s_k, vt_k = lowrank.truncated_svd(random_matrix(seed=1), rank)
    assert u_k.shape == (40, rank) and s_k.shape == (rank,) and vt_k.shape == (rank, 30)


def test_truncated_svd_beats_other_rank_k_matrices():
    a, rank = random_matrix(seed=2), 4
    best = lowrank.frobenius_error(a, lowrank.low_rank_approx(a, rank))
    rng = np.random.default_rng(3)
    for _ in range(20):  # random rank-4 matrices, and rank-4 truncations of perturbed copies of A
        other = rng.normal(size=(40, rank)) @ rng.normal(size=(rank, 30))
        perturbed = lowrank.low_rank_approx(a + 0.3 * rng.normal(size=a.shape), rank)
        assert lowrank.frobenius_error(a, other) >= best
        assert lowrank.frobenius_error(a, perturbed) >= best - 1e-12


def test_energy_storage_and_compression():
    s = np.array([3.0, 2.0, 1.0])
    assert lowrank.energy(s) == pytest.approx([9 / 14, 13 / 14, 1.0])
    assert lowrank.rank_for_energy(s, 0.9) == 2
    assert lowrank.rank_for_energy(s, 1.0) == 3
    assert lowrank.factor_storage((100, 50), 5) == 5 * 151
    assert lowrank.compression_ratio((100, 50), 5) == pytest.approx(5000 / 755)


def test_colour_image_round_trip_at_full_rank():
    image = np.random.default_rng(4).random((20, 16, 3))
    svds = lowrank.channel_svds(image)
    assert len(svds) == 3
    np.testing.assert_allclose(lowrank.reconstruct_channels(svds, 16), image, atol=1e-10)
    assert lowrank.reconstruct_channels(lowrank.channel_svds(image[..., 0]), 16).shape == (20, 16)


# ------------------------------------------------------------------------- ALS


@pytest.mark.parametrize("weighted_reg, use_biases", [(True, True), (False, True), (True, False)])
def test_als_objective_never_increases(weighted_reg, use_biases):
    data = synthetic_ratings(n_users=80, n_items=60, density=0.2, seed=1)
    _, history = als.als_fit(data.train, data.n_users, data.n_items, rank=8, reg=0.05 if weighted_reg else 2.0,
                                 bias_reg=5.0, n_iters=12, weighted_reg=weighted_reg, use_biases=use_biases, seed=0)
    objective = history["objective"]
    # each half-step is an exact block minimisation, so the regularised loss is monotone
    # (the plain training RMSE is not guaranteed to be)
    assert all(later <= earlier * (1 + 1e-10) for earlier, later in zip(objective, objective[1:]))
    assert objective[-1] < objective[0]


def test_als_recovers_low_rank_matrix_to_the_noise_level():
    # ~80 ratings per user, ~120 per item: enough to pin down rank 4 + a bias per row
    data = synthetic_ratings(n_users=300, n_items=200, true_rank=4, density=0.5, noise_std=0.3, seed=2)
    model, history = als.als_fit(data.train, data.n_users, data.n_items, rank=4, reg=0.01, n_iters=15,
                                     seed=0, valid=data.test)
    users, items, _ = data.test
    vs_truth = als.rmse(model.predict(users, items), data.truth[users, items])
    assert history["valid_rmse"][-1] <= 1.1 * data.noise_std
    assert vs_truth <= 0.45 * data.noise_std  # most of the hidden low-rank structure is recovered
    bias_only = als.bias_baseline(data.train, data.n_users, data.n_items).evaluate(data.test)
    assert history["valid_rmse"][-1] < 0.5 * bias_only


def test_als_is_deterministic_and_baselines_are_ordered():
    data = synthetic_ratings(n_users=60, n_items=50, seed=3)
    first, _ = als.als_fit(data.train, data.n_users, data.n_items, rank=3, n_iters=4, seed=7)
    second, _ = als.als_fit(data.train, data.n_users, data.n_items, rank=3, n_iters=4, seed=7)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)
    mean = als.global_mean_baseline(data.train, data.n_users, data.n_items).evaluate(data.test)
    bias = als.bias_baseline(data.train, data.n_users, data.n_items).evaluate(data.test)
    assert bias < mean
    assert lowrank.pca_2d(first.item_factors).shape == (50, 2)


def test_batched_ridge_solve_equals_one_solve_per_row():
    """The padded count buckets must give exactly the per-row ridge solutions (rows of 0..40 ratings)."""
    rng = np.random.default_rng(8)
    n_rows, n_other, dim = 30, 25, 4
    own = np.repeat(np.arange(n_rows), rng.integers(0, 41, n_rows))
    other = rng.integers(0, n_other, len(own))
    table, targets = rng.normal(size=(n_other, dim)), rng.normal(size=len(own))
    penalty = rng.uniform(0.1, 2.0, (n_rows, dim))
    got = als._ridge_side(als._groups(own, other, n_rows, n_other), table, targets, penalty)
    for row in range(n_rows):
        f, t = table[other[own == row]], targets[own == row]
        expected = np.linalg.solve(f.T @ f + np.diag(penalty[row]), f.T @ t)
        np.testing.assert_allclose(got[row], expected, rtol=1e-9, atol=1e-12)


def test_choose_by_validation_uses_only_training_ratings():
    data = synthetic_ratings(n_users=150, n_items=100, true_rank=3, density=0.4, noise_std=0.3, seed=6)
    fit_part, valid = als.holdout_split(data.train, 0.2, seed=1)
    assert len(fit_part[2]) + len(valid[2]) == len(data.train[2])
    assert not set(zip(*fit_part[:2])) & set(zip(*valid[:2]))
    assert 0.15 < len(valid[2]) / len(data.train[2]) < 0.25
    choice = als.choose_by_validation(data.train, data.n_users, data.n_items, ranks=[1, 3], regs=[0.01, 3.0],
                                          valid_fraction=0.2, seed=1, n_iters=6)
    assert [(c["rank"], c["reg"]) for c in choice["grid"]] == [(1, 0.01), (1, 3.0), (3, 0.01), (3, 3.0)]
    assert choice["valid_rmse"] == min(c["valid_rmse"] for c in choice["grid"])
    assert (choice["rank"], choice["reg"]) == (3, 0.01)  # the true rank, and a reg that does not erase it
    # the same call on the same training ratings chooses the same, whatever the test set holds
    again = als.choose_by_validation(data.train, data.n_users, data.n_items, ranks=[1, 3], regs=[0.01, 3.0],
                                         valid_fraction=0.2, seed=1, n_iters=6)
    assert again == choice


def test_clip_keeps_predictions_on_the_rating_scale():
    data = synthetic_ratings(n_users=40, n_items=30, seed=4)
    model, _ = als.als_fit(data.train, data.n_users, data.n_items, rank=3, n_iters=3, clip=(1.0, 5.0))
    pred = model.predict(*data.test[:2])
    assert pred.min() >= 1.0 and pred.max() <= 5.0


# ------------------------------------------------------------------- MovieLens


def write_ml100k(root, n_users=60, n_items=50, seed=0):
    """A small folder in the real ml-100k format: u.data plus u1..u5 .base/.test (disjoint test folds)."""
    data = synthetic_ratings(n_users=n_users, n_items=n_items, density=0.3, noise_std=0.5, test_fraction=0.0, seed=seed)
    users, items, values = data.train
    stars = np.clip(np.rint(values), 1, 5).astype(int)
    rows = [f"{u + 1}\t{i + 1}\t{r}\t{881250949 + k}" for k, (u, i, r) in enumerate(zip(users, items, stars))]
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("\n".join(rows) + "\n", encoding="latin-1")
    fold = np.random.default_rng(seed).integers(0, 5, len(rows))
    for k in range(5):
        (folder / f"u{k + 1}.base").write_text("\n".join(r for r, f in zip(rows, fold) if f != k) + "\n")
        (folder / f"u{k + 1}.test").write_text("\n".join(r for r, f in zip(rows, fold) if f == k) + "\n")
    return folder, len(rows)


def test_movielens_loader_reads_the_real_format(tmp_path, monkeypatch):
    folder, n_rows = write_ml100k(tmp_path)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    split = load_ml100k_split("u1")
    assert len(split.train[2]) + len(split.test[2]) == n_rows
    assert split.n_users == 60 and split.n_items == 50
    assert split.train[0].min() >= 0 and split.train[0].max() < 60  # 1-based ids became 0-based
    assert set(np.unique(split.train[2])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert split.rating_range == (1.0, 5.0)
    test_pairs = set(zip(*split.test[:2]))
    assert not test_pairs & set(zip(*split.train[:2]))  # base and test are disjoint
    assert split.skips.counts() == {}


def test_movielens_loader_reports_blank_and_repeated_rows(tmp_path):
    path = tmp_path / "u1.base"
    path.write_text("1\t2\t3\t100\n\n1\t2\t4\t101\n2\t1\t5\t102\n")
    from data_loaders.common import SkipReport

    skips = SkipReport()
    users, items, ratings = read_ratings_file(path, skips)
    assert list(ratings) == [3.0, 5.0]
    assert skips.counts() == {"blank line": 1, "repeated user-item pair": 1}
    assert skips.skipped[1]["row"] == 3


@pytest.mark.parametrize("line, column",
                         [("1\t2\tfive\t100", "rating"), ("1\t2\t7\t100", "rating"), ("x\t2\t3\t1", "user")])
def test_movielens_bad_row_is_one_clear_error(tmp_path, line, column):
    path = tmp_path / "u.data"
    path.write_text("1\t1\t4\t99\n" + line + "\n")
    with pytest.raises(DataError, match=rf"u.data, row 2, field '{column}'"):
        read_ratings_file(path)
    path.write_text("1 1 4 99\n")
    with pytest.raises(DataError, match="row 1: expected 4 tab-separated fields"):
        read_ratings_file(path)


def test_movielens_split_runs_beside_a_damaged_u_data(tmp_path, monkeypatch):
    """A widely shared ml-100k copy has extra user-id-0 rows in u.data; its splits are intact and must run."""
    folder, n_rows = write_ml100k(tmp_path)
    with (folder / "u.data").open("a") as f:
        f.write("0\t12\t3\t881250949\n0\t7\t5\t881250950\n")
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    split = load_ml100k_split("u2")
    assert len(split.train[2]) + len(split.test[2]) == n_rows
    assert split.n_users == 60 and split.n_items == 50  # ranges from u2.base + u2.test
    (folder / "u.data").unlink()  # not needed at all for a split
    assert load_ml100k_split("u2").n_users == 60


def test_movielens_corrupt_split_file_is_one_clear_error(tmp_path, monkeypatch):
    folder, _ = write_ml100k(tmp_path)
    lines = (folder / "u4.base").read_text().splitlines()
    lines[2] = "0\t12\t3\t881250949"
    (folder / "u4.base").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"u4.base, row 3, field 'user'.*1-based"):
        load_ml100k_split("u4")
    assert load_ml100k_split("u1").name == "u1"  # the other splits still load


def test_movielens_missing_folder_names_lab_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    with pytest.raises(LabPathError, match="LAB_DATA_DIR"):
        load_ml100k_split("u1")
    folder, _ = write_ml100k(tmp_path)
    (folder / "u3.test").unlink()
    with pytest.raises(LabPathError, match="u3.test"):
        load_ml100k_split("u3")


@pytest.mark.notebook
def test_teach_als_cli_runs_every_movielens_split(tmp_path, monkeypatch):
    from scripts import teach_als

    write_ml100k(tmp_path)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "out"))
    result = teach_als.main(["--config", "configs/teach_als.yaml", "--data", "ml-100k", "--run_name", "ml",
                             "--n_iters", "5", "--sweep_iters", "3", "--sweep_ranks", "[1, 3]", "--sweep_regs", "[0.1]",
                             "--choice_ranks", "[2, 4]", "--choice_regs", "[0.05, 0.2]", "--choice_iters", "4"])
    table = result["table"]
    assert [row["split"] for row in table] == ["u1", "u2", "u3", "u4", "u5", "mean"]
    assert table[-1]["als"] == pytest.approx(np.mean([row["als"] for row in table[:5]]))
    assert all(row["als"] < row["global_mean"] for row in table)
    metrics = json.loads((tmp_path / "out" / "teach_als" / "ml" / "metrics.json").read_text())
    assert metrics["data"] == "ml-100k" and len(metrics["history"]["iteration"]) == 5
    # each split chose its own rank and reg on its training ratings, from the grid given
    assert [c["split"] for c in metrics["choices"]] == ["u1", "u2", "u3", "u4", "u5"]
    assert all(len(c["grid"]) == 4 and c["rank"] in (2, 4) and c["reg"] in (0.05, 0.2) for c in metrics["choices"])
    # the batch report's key metric: the mean test RMSE, at the top level of metrics.json
    from scripts.batch import key_metric

    assert metrics["mean_rmse"] == pytest.approx(table[-1]["als"])
    assert key_metric(metrics, {}) == ("mean_rmse", metrics["mean_rmse"])


# ----------------------------------------------------------------------- Spark

needs_pyspark = pytest.mark.skipif(importlib.util.find_spec("pyspark") is None,
                                   reason="pyspark not installed (pip install -r requirements-spark.txt)")


@pytest.mark.spark
@needs_pyspark
def test_spark_als_agrees_with_numpy_als(monkeypatch):
    from lab_utils.teaching.spark_als import spark_als

    monkeypatch.delenv("LAB_SPARK_MASTER", raising=False)
    data = synthetic_ratings(n_users=120, n_items=80, true_rank=3, density=0.3, noise_std=0.3, seed=5)
    # the same model as MLlib's: raw ratings ~ P Q^T, count-weighted L2, no mean or biases
    _, history = als.als_fit(data.train, data.n_users, data.n_items, rank=3, reg=0.02, n_iters=10,
                                 use_biases=False, center=False, valid=data.test)
    spark = spark_als(data.train, data.test, rank=3, reg=0.02, n_iters=10, master="local[2]")
    assert spark["master"] == "local[2]"
    assert spark["rmse"] == pytest.approx(history["valid_rmse"][-1], rel=0.1)
    assert spark["rmse"] < als.global_mean_baseline(data.train, data.n_users, data.n_items).evaluate(data.test)


def test_spark_missing_is_a_clear_message(monkeypatch):
    import builtins

    from lab_utils.teaching import spark_als

    real_import = builtins.__import__

    def no_pyspark(name, *args, **kwargs):
        if name.startswith("pyspark"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    with pytest.raises(spark_als.SparkUnavailable, match="requirements-spark.txt"):
        spark_als.import_pyspark()
    monkeypatch.setenv("LAB_SPARK_MASTER", "spark://host:7077")
    assert spark_als.spark_master() == "spark://host:7077"
    assert spark_als.spark_master("local[1]") == "local[1]"


def test_spectrum_plot_of_a_zero_update_draws_instead_of_dividing_by_zero(tmp_path):
    """An adapter whose B is still zero (no step taken yet) has dW = 0: the lesson must still draw it."""
    from lab_utils.core.plots import plot_singular_values

    plot_singular_values([0.0, 0.0, 0.0], tmp_path / "zero.png")
    assert (tmp_path / "zero.png").stat().st_size > 0
