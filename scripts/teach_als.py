"""Teaching: matrix factorisation of ratings by alternating least squares (ALS).

    python -m scripts.teach_als --config configs/teach_als.yaml
    LAB_DATA_DIR=... python -m scripts.teach_als --config configs/teach_als.yaml --data ml-100k

A ratings matrix is mostly empty. ALS models it as mu + b_user + c_item +
P @ Q.T with thin factors P (users x r), Q (items x r) — the shape of LoRA's
update B @ A — and fits it by alternating ridge regressions. By default the
ratings are synthetic with a known true rank and noise level, so the lesson
can show the model recovering the truth down to the noise. With `data:
ml-100k` it runs on the five official MovieLens-100K splits and reports RMSE
per split and their mean, next to the global-mean and bias baselines.
Rank and regularisation are chosen per split on a validation set carved out
of that split's training ratings (never on its test set), then the chosen
model is refitted on the whole training split.
`spark: true` also fits Spark MLlib's ALS on the first split and compares.

Writes to $LAB_OUTPUT_DIR/teach_als/<run_name>/: rmse_history.png,
rmse_vs_rank.png, rmse_vs_reg.png, item_embedding.png, metrics.json (with the
top-level `mean_rmse` the batch report shows), params.json.
"""

import time
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np

from data_loaders.movielens import RatingsSplit, load_ml100k_split, synthetic_ratings
from lab_utils.teaching import als, lowrank
from lab_utils.core import plots
from lab_utils.core.artifacts import write_json
from lab_utils.core.config import run_cli, save_params
from lab_utils.core.paths import default_run_name, mark_complete, run_dir
from lab_utils.core.errors import ParamError


@dataclass(kw_only=True)
class Params:
    data: str = "synthetic"  # "synthetic" (generated in code) or "ml-100k" (folder under LAB_DATA_DIR)
    splits: list = field(default_factory=lambda: ["u1", "u2", "u3", "u4", "u5"])  # ml-100k only
    # synthetic ratings: a rank-`true_rank` matrix, `density` of it observed, Gaussian noise
    n_users: int = 500  # synthetic ratings: users
    n_items: int = 400  # synthetic ratings: items
    true_rank: int = 5  # rank of the hidden rating matrix
    density: float = 0.3  # share of the matrix observed
    noise_std: float = 0.5  # Gaussian noise added to each rating
    # the model
    rank: int = 10  # used as given when choose_by_validation is false
    reg: float = 0.1  # per-rating L2 on factors (scaled by each row's rating count: ALS-WR)
    bias_reg: float = 2.0  # L2 on biases: a user with 3 ratings should not get an extreme bias
    use_biases: bool = True  # fit a global mean + user and item biases besides the factors
    n_iters: int = 15  # ALS sweeps of the final fit
    # rank and reg chosen per split on a validation set carved from its training ratings
    choose_by_validation: bool = True  # pick rank and reg per split on validation data carved from its training ratings
    choice_ranks: list = field(default_factory=lambda: [20, 40])  # ranks tried
    choice_regs: list = field(default_factory=lambda: [0.1, 0.15, 0.2])  # regularisations tried
    valid_fraction: float = 0.1  # share of each training split held out for the choice
    choice_iters: int = 5  # ALS sweeps per tried pair
    # sweeps drawn on the first split
    sweep_ranks: list = field(default_factory=lambda: [1, 2, 5, 10, 20])  # ranks of the sweep drawn on split 1
    sweep_regs: list = field(default_factory=lambda: [0.003, 0.01, 0.03, 0.1, 0.3])  # regularisations of the reg sweep
    sweep_iters: int = 10  # ALS sweeps per sweep point
    # scale-out comparison (needs requirements-spark.txt and Java 17+)
    spark: bool = False  # also fit with Spark MLlib's ALS to compare (needs requirements-spark.txt and Java 17+)
    spark_master: str = ""  # empty: $LAB_SPARK_MASTER, else local[*]
    seed: int = 0  # random seed for the synthetic data and the factor init
    run_name: str = ""  # empty: teach_als-<timestamp>
    overwrite: bool = False  # replace a finished run with this name


@dataclass
class SplitResult:
    row: dict  # the split's line of the results table (test RMSEs, fit time)
    choice: dict  # the rank and reg used, and the validation grid they were chosen on
    model: als.FactorModel
    history: dict  # per-iteration RMSE of the final fit


def load_splits(p: Params) -> list[RatingsSplit]:
    if p.data == "synthetic":
        return [synthetic_ratings(p.n_users, p.n_items, p.true_rank, p.density, p.noise_std, seed=p.seed)]
    if p.data == "ml-100k":
        return [load_ml100k_split(name) for name in p.splits]
    raise ParamError(f"unknown data '{p.data}'; expected 'synthetic' or 'ml-100k'")


def fit_model(p: Params, split: RatingsSplit, rank=None, reg=None, n_iters=None, use_biases=None, center=True,
              track: bool = True):
    """ALS with the run's settings; any argument given replaces its Params value (for sweeps).
    track=False skips the per-iteration history (train/test RMSE, objective)."""
    return als.als_fit(
        split.train, split.n_users, split.n_items,
        rank=p.rank if rank is None else rank, reg=p.reg if reg is None else reg, bias_reg=p.bias_reg,
        n_iters=p.n_iters if n_iters is None else n_iters,
        use_biases=p.use_biases if use_biases is None else use_biases, center=center,
        seed=p.seed, valid=split.test, clip=split.rating_range, track=track,
    )


def choose_settings(p: Params, split: RatingsSplit) -> dict:
    """Rank and reg for this split: the best on validation data from its training ratings, or Params' own."""
    if not p.choose_by_validation:
        return {"rank": p.rank, "reg": p.reg, "valid_rmse": None, "grid": []}
    return als.choose_by_validation(
        split.train, split.n_users, split.n_items, ranks=p.choice_ranks, regs=p.choice_regs,
        valid_fraction=p.valid_fraction, seed=p.seed, bias_reg=p.bias_reg, n_iters=p.choice_iters,
        use_biases=p.use_biases, clip=split.rating_range,
    )


def baselines(p: Params, split: RatingsSplit) -> dict:
    """Test RMSE of the models ALS must beat: one number for everyone, then mu + b_user + c_item."""
    mean = als.global_mean_baseline(split.train, split.n_users, split.n_items, clip=split.rating_range)
    bias = als.bias_baseline(split.train, split.n_users, split.n_items, p.bias_reg, clip=split.rating_range)
    return {"global_mean": mean.evaluate(split.test), "user_item_bias": bias.evaluate(split.test)}


def evaluate_split(p: Params, split: RatingsSplit, choice: dict | None = None, track: bool = True) -> SplitResult:
    """Choose rank and reg (unless `choice` is given), refit on the whole training split,
    and score it and the baselines on the test set. track=False: no per-iteration history
    (only the first split's is drawn; computing it costs a tenth of the run)."""
    start = time.perf_counter()
    choice = choose_settings(p, split) if choice is None else choice
    model, history = fit_model(p, split, rank=choice["rank"], reg=choice["reg"], track=track)
    row = {"split": split.name, **baselines(p, split), "als": model.evaluate(split.test),
           "als_train": model.evaluate(split.train), "fit_seconds": time.perf_counter() - start}
    if split.truth is not None:  # synthetic: how close to the noise-free matrix, and the floor
        row["als_vs_truth"] = als.rmse(model.predict(*split.test[:2]), split.truth[split.test[0], split.test[1]])
        row["noise_std"] = split.noise_std
    return SplitResult(row, choice, model, history)


def results_table(results: list[SplitResult]) -> list[dict]:
    """One row per split, then their mean."""
    rows = [result.row for result in results]
    return rows + [mean_row(rows)]


def sweep(p: Params, split: RatingsSplit, name: str, values, choice: dict | None = None) -> dict:
    """Final train/test RMSE for each value of one knob ("rank" or "reg"), the other at the chosen setting."""
    fixed = {k: choice[k] for k in ("rank", "reg") if k != name} if choice else {}
    train, valid = [], []
    for value in values:
        _, history = fit_model(p, split, n_iters=p.sweep_iters, **fixed, **{name: value})
        train.append(history["train_rmse"][-1])
        valid.append(history["valid_rmse"][-1])
    return {"values": list(values), "train_rmse": train, "valid_rmse": valid}


def compare_spark(p: Params, split: RatingsSplit) -> dict:
    """Spark MLlib ALS vs ours on the same split and the same model.

    MLlib fits raw ratings with P Q^T alone (no global mean, no biases), so ours
    runs that way here too; the main table's model adds mu and the biases.
    """
    from lab_utils.teaching.spark_als import spark_als

    start = time.perf_counter()
    _, history = fit_model(p, split, use_biases=False, center=False)
    numpy_seconds = time.perf_counter() - start
    result = spark_als(split.train, split.test, rank=p.rank, reg=p.reg, n_iters=p.n_iters, seed=p.seed,
                       master=p.spark_master or None, clip=split.rating_range)
    return {"split": split.name, "numpy_rmse": history["valid_rmse"][-1], "numpy_fit_seconds": numpy_seconds,
            **{f"spark_{k}": v for k, v in result.items()}}


def mean_row(rows: list[dict]) -> dict:
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {"split": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def save_figures(run, split, result: SplitResult, rank_sweep, reg_sweep) -> None:
    base = {k: result.row[k] for k in ("global_mean", "user_item_bias")}
    plots.plot_rmse_history(result.history, run / "rmse_history.png", split.noise_std, base)
    plots.plot_rmse_sweep(rank_sweep["values"], rank_sweep["train_rmse"], rank_sweep["valid_rmse"], "rank",
                          run / "rmse_vs_rank.png", noise_level=split.noise_std)
    plots.plot_rmse_sweep(reg_sweep["values"], reg_sweep["train_rmse"], reg_sweep["valid_rmse"], "reg",
                          run / "rmse_vs_reg.png", log_x=True, noise_level=split.noise_std)
    plots.plot_item_embedding(lowrank.pca_2d(result.model.item_factors), run / "item_embedding.png",
                              colour=result.model.item_bias, colour_label="item bias c_i")
    plt.close("all")


def save_artifacts(p: Params, run, splits, results: list[SplitResult], rank_sweep, reg_sweep, spark=None) -> dict:
    """Figures of the first split, metrics.json (top-level mean_rmse for the batch report), the completion marker."""
    save_figures(run, splits[0], results[0], rank_sweep, reg_sweep)
    table = results_table(results)
    metrics = {
        "data": p.data,
        "mean_rmse": table[-1]["als"],  # mean test RMSE over the splits: the run's key metric
        "summary": [s.summary() for s in splits],
        "table": table,
        "choices": [{"split": s.name, **r.choice} for s, r in zip(splits, results)],
        "history": results[0].history,
        "rank_sweep": rank_sweep, "reg_sweep": reg_sweep, "spark": spark,
        "skipped": {s.name: s.skips.counts() for s in splits},
    }
    write_json(metrics, run / "metrics.json")
    mark_complete(run, {"mean_rmse": metrics["mean_rmse"]})
    return metrics


def make_run_dir(p: Params):
    """The run's output folder, with params.json in it (a finished run is not overwritten unless asked)."""
    run = run_dir("teach_als", p.run_name or default_run_name("teach_als"), overwrite=p.overwrite)
    save_params(p, run / "params.json")
    return run


def run(p: Params) -> dict:
    run = make_run_dir(p)
    splits = load_splits(p)
    results = [evaluate_split(p, split, track=(i == 0)) for i, split in enumerate(splits)]
    first, first_result = splits[0], results[0]
    rank_sweep = sweep(p, first, "rank", p.sweep_ranks, first_result.choice)
    reg_sweep = sweep(p, first, "reg", p.sweep_regs, first_result.choice)
    spark = compare_spark(p, first) if p.spark else None
    metrics = save_artifacts(p, run, splits, results, rank_sweep, reg_sweep, spark)
    print(format_table(metrics["table"]))
    print(f"teach_als: wrote {run}")
    return {"run_dir": str(run), **metrics}


def format_table(table: list[dict]) -> str:
    keys = [k for k in table[0] if k != "split"]
    lines = ["split  " + "  ".join(f"{k:>14}" for k in keys)]
    lines += [f"{r['split']:<6} " + "  ".join(f"{r.get(k, float('nan')):>14.4f}" for k in keys) for r in table]
    return "\n".join(lines)


def main(argv=None):
    return run_cli(run, Params, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
