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
`spark: true` also fits Spark MLlib's ALS on the first split and compares.

Writes to $LAB_OUTPUT_DIR/teach_als/<run_name>/: rmse_history.png,
rmse_vs_rank.png, rmse_vs_reg.png, item_embedding.png, metrics.json, params.json.
"""

import json
import time
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np

from data_loaders.movielens import RatingsSplit, load_ml100k_split, synthetic_ratings
from lab_utils import lowrank, plots
from lab_utils.config import run_cli, save_params
from lab_utils.paths import default_run_name, mark_complete, run_dir


@dataclass(kw_only=True)
class Params:
    data: str = "synthetic"  # "synthetic" (generated in code) or "ml-100k" (folder under LAB_DATA_DIR)
    splits: list = field(default_factory=lambda: ["u1", "u2", "u3", "u4", "u5"])  # ml-100k only
    # synthetic ratings: a rank-`true_rank` matrix, `density` of it observed, Gaussian noise
    n_users: int = 500
    n_items: int = 400
    true_rank: int = 5
    density: float = 0.3
    noise_std: float = 0.5
    # the model
    rank: int = 10
    reg: float = 0.1  # per-rating L2 on factors (scaled by each row's rating count: ALS-WR)
    bias_reg: float = 10.0  # L2 on biases: a user with 3 ratings should not get an extreme bias
    use_biases: bool = True
    n_iters: int = 15
    # sweeps drawn on the first split
    sweep_ranks: list = field(default_factory=lambda: [1, 2, 5, 10, 20])
    sweep_regs: list = field(default_factory=lambda: [0.003, 0.01, 0.03, 0.1, 0.3])
    sweep_iters: int = 10
    # scale-out comparison (needs requirements-spark.txt and Java 17+)
    spark: bool = False
    spark_master: str = ""  # empty: $LAB_SPARK_MASTER, else local[*]
    seed: int = 0
    run_name: str = ""  # empty: teach_als-<timestamp>
    overwrite: bool = False


def load_splits(p: Params) -> list[RatingsSplit]:
    if p.data == "synthetic":
        return [synthetic_ratings(p.n_users, p.n_items, p.true_rank, p.density, p.noise_std, seed=p.seed)]
    if p.data == "ml-100k":
        return [load_ml100k_split(name) for name in p.splits]
    raise ValueError(f"unknown data '{p.data}'; expected 'synthetic' or 'ml-100k'")


def fit_model(p: Params, split: RatingsSplit, rank=None, reg=None, n_iters=None, use_biases=None, center=True):
    """ALS with the run's settings; any argument given replaces its Params value (for sweeps)."""
    return lowrank.als_fit(
        split.train, split.n_users, split.n_items,
        rank=p.rank if rank is None else rank, reg=p.reg if reg is None else reg, bias_reg=p.bias_reg,
        n_iters=p.n_iters if n_iters is None else n_iters,
        use_biases=p.use_biases if use_biases is None else use_biases, center=center,
        seed=p.seed, valid=split.test, clip=split.rating_range,
    )


def baselines(p: Params, split: RatingsSplit) -> dict:
    """Test RMSE of the models ALS must beat: one number for everyone, then mu + b_user + c_item."""
    mean = lowrank.global_mean_baseline(split.train, split.n_users, split.n_items, clip=split.rating_range)
    bias = lowrank.bias_baseline(split.train, split.n_users, split.n_items, p.bias_reg, clip=split.rating_range)
    return {"global_mean": mean.evaluate(split.test), "user_item_bias": bias.evaluate(split.test)}


def evaluate_split(p: Params, split: RatingsSplit):
    """Baselines and the ALS model on one split: (table row, model, per-iteration history)."""
    start = time.perf_counter()
    model, history = fit_model(p, split)
    row = {"split": split.name, **baselines(p, split), "als": history["valid_rmse"][-1],
           "als_train": history["train_rmse"][-1], "fit_seconds": time.perf_counter() - start}
    if split.truth is not None:  # synthetic: how close to the noise-free matrix, and the floor
        row["als_vs_truth"] = lowrank.rmse(model.predict(*split.test[:2]), split.truth[split.test[0], split.test[1]])
        row["noise_std"] = split.noise_std
    return row, model, history


def sweep(p: Params, split: RatingsSplit, name: str, values) -> dict:
    """Final train/test RMSE for each value of one knob ("rank" or "reg"), the rest fixed."""
    train, valid = [], []
    for value in values:
        _, history = fit_model(p, split, n_iters=p.sweep_iters, **{name: value})
        train.append(history["train_rmse"][-1])
        valid.append(history["valid_rmse"][-1])
    return {"values": list(values), "train_rmse": train, "valid_rmse": valid}


def compare_spark(p: Params, split: RatingsSplit) -> dict:
    """Spark MLlib ALS vs ours on the same split and the same model.

    MLlib fits raw ratings with P Q^T alone (no global mean, no biases), so ours
    runs that way here too; the main table's model adds mu and the biases.
    """
    from lab_utils.spark_als import spark_als

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


def save_figures(run, split, history, model, rank_sweep, reg_sweep, table) -> None:
    base = {k: table[-1][k] for k in ("global_mean", "user_item_bias")}
    plots.plot_rmse_history(history, run / "rmse_history.png", split.noise_std, base)
    plots.plot_rmse_sweep(rank_sweep["values"], rank_sweep["train_rmse"], rank_sweep["valid_rmse"], "rank",
                          run / "rmse_vs_rank.png", noise_level=split.noise_std)
    plots.plot_rmse_sweep(reg_sweep["values"], reg_sweep["train_rmse"], reg_sweep["valid_rmse"], "reg",
                          run / "rmse_vs_reg.png", log_x=True, noise_level=split.noise_std)
    plots.plot_item_embedding(lowrank.pca_2d(model.item_factors), run / "item_embedding.png",
                              colour=model.item_bias, colour_label="item bias c_i")


def run(p: Params) -> dict:
    run = run_dir("teach_als", p.run_name or default_run_name("teach_als"), overwrite=p.overwrite)
    save_params(p, run / "params.json")
    splits = load_splits(p)
    results = [evaluate_split(p, split) for split in splits]
    table = [row for row, _, _ in results] + [mean_row([row for row, _, _ in results])]
    first, (_, model, history) = splits[0], results[0]
    rank_sweep = sweep(p, first, "rank", p.sweep_ranks)
    reg_sweep = sweep(p, first, "reg", p.sweep_regs)
    spark = compare_spark(p, first) if p.spark else None
    save_figures(run, first, history, model, rank_sweep, reg_sweep, table)
    plt.close("all")
    metrics = {"data": p.data, "summary": [s.summary() for s in splits], "table": table, "history": history,
               "rank_sweep": rank_sweep, "reg_sweep": reg_sweep, "spark": spark,
               "skipped": {s.name: s.skips.counts() for s in splits}}
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    mark_complete(run, {"mean_rmse": table[-1]["als"]})
    print(format_table(table))
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
