"""Teaching: GRPO's loss variants side by side (DAPO, GRPO, Dr. GRPO, GSPO), read from finished runs.

    python -m scripts.batch configs/batch/grpo_variants.yaml       # the runs: the CPU demo once per variant
    python -m scripts.teach_grpo_variants --config configs/teach_grpo_variants.yaml
    papermill notebooks/teach_grpo_variants.ipynb out.ipynb -f configs/teach_grpo_variants.yaml

Every variant samples the same groups and scores them with the same rewards; they differ only in how one
step turns those scores into a loss (scripts/grpo_gsm8k.py: loss_type, importance_sampling_level,
scale_rewards). This lesson trains nothing: it reads each finished grpo_gsm8k run under
$LAB_OUTPUT_DIR/<runs_dir>/ (params.json, metrics.json, history.json) and draws their reward curves and
held-out format rates on shared axes. Writes to $LAB_OUTPUT_DIR/teach_grpo_variants/<run_name>/:
rewards.png, format_rates.png, variants.md/.csv, metrics.json, params.json.
"""

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lab_utils.core import plots
from lab_utils.core.artifacts import read_json, write_json, write_table
from lab_utils.core.config import run_cli, save_params
from lab_utils.core.paths import default_run_name, mark_complete, output_dir, run_dir

EXPERIMENT = "teach_grpo_variants"
MOMENTS = ("before", "after_warmup", "after")  # grpo_gsm8k's format_rate_<moment>: x = 0, 1, 2 in the plot
ORDER = ("dapo", "grpo", "bnpo", "dr_grpo", "gspo")  # the batch's variants first, in this order; others after


@dataclass(kw_only=True)
class Params:
    runs_dir: str = "batch/grpo_variants"  # under LAB_OUTPUT_DIR: every finished grpo_gsm8k run below it is read
    run_name: str = ""  # empty: teach_grpo_variants-<timestamp>
    overwrite: bool = False  # a finished run with this run_name is replaced only when true


def find_runs(p: Params) -> dict[str, Path]:
    """{run name: folder} of the finished grpo_gsm8k runs (run_complete.json present) under runs_dir."""
    root = output_dir() / p.runs_dir
    found = {marker.parent.name: marker.parent for marker in sorted(root.rglob("run_complete.json"))
             if marker.parent.parent.name == "grpo_gsm8k"}
    if not found:
        raise FileNotFoundError(f"no finished grpo_gsm8k runs under {root}; run them first: "
                                "python -m scripts.batch configs/batch/grpo_variants.yaml (or set runs_dir)")
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(ORDER)), item[0])))


def load_runs(folders: dict[str, Path]) -> dict[str, dict]:
    """{run name: {"params", "metrics", "history"}} read from each run folder."""
    return {name: {part: read_json(folder / f"{part}.json") for part in ("params", "metrics", "history")}
            for name, folder in folders.items()}


def variant(params: dict) -> str:
    """The loss a run trained with, in the papers' names: GSPO = sequence-level ratios."""
    loss = params.get("loss_type", "dapo")  # runs from before the knob existed used TRL 1.14's default
    level = params.get("importance_sampling_level", "token")
    return f"{loss}, {level} ratios, std over {params.get('scale_rewards', 'group')}"


def variants_table(runs: dict[str, dict]) -> pd.DataFrame:
    """One row per run: its loss settings, held-out format rates, mean reward early and late, step time."""
    rows = []
    for name, r in runs.items():
        m = r["metrics"]
        first, last = m.get("reward_first_quarter"), m.get("reward_last_quarter")
        rows.append({"run": name, "variant": variant(r["params"]),
                     **{f"format_rate_{moment}": m.get(f"format_rate_{moment}") for moment in MOMENTS},
                     "accuracy_after": m.get("accuracy_after"), "reward_first_quarter": first,
                     "reward_last_quarter": last,
                     "reward_gain": round(last - first, 4) if first is not None and last is not None else None,
                     "grpo_steps": m.get("steps_trained"), "seconds_per_step": m.get("seconds_per_step")})
    return pd.DataFrame(rows).set_index("run")


def format_rate_points(runs: dict[str, dict]) -> dict[str, list[dict]]:
    """{run: records} of the held-out format rate at x = 0 (before), 1 (after the warm-up), 2 (after GRPO)."""
    return {name: [{"step": x, "format_rate": r["metrics"].get(f"format_rate_{moment}")}
                   for x, moment in enumerate(MOMENTS)] for name, r in runs.items()}


def start_run(p: Params) -> Path:
    run = run_dir(EXPERIMENT, p.run_name or default_run_name(EXPERIMENT), overwrite=p.overwrite)
    save_params(p, run / "params.json")
    return run


def plot_rewards(run: Path, runs: dict[str, dict]):
    """Each run's mean weighted reward of its sampled completions, per GRPO step."""
    return plots.plot_loss_curves({name: r["history"] for name, r in runs.items()}, run / "rewards.png",
                                  title="reward of the sampled completions", key="reward", ylabel="mean reward",
                                  xlabel="GRPO step")


def plot_format_rates(run: Path, runs: dict[str, dict]):
    """Each run's held-out format rate before, after the warm-up and after GRPO."""
    return plots.plot_loss_curves(format_rate_points(runs), run / "format_rates.png", key="format_rate",
                                  title="held-out answers in the <reasoning>/<answer> layout",
                                  ylabel="format rate", xlabel="0 = before, 1 = after the warm-up, 2 = after GRPO")


def save_results(run: Path, table: pd.DataFrame) -> dict:
    """variants.md/.csv and metrics.json, then the completion marker (figures are saved where drawn)."""
    write_table(table.reset_index(), run, "variants")
    metrics = {"runs": list(table.index), **{f"{column}/{name}": value for name, row in table.iterrows()
                                             for column, value in row.items() if column != "variant"}}
    write_json(metrics, run / "metrics.json")
    plt.close("all")
    mark_complete(run, {"runs": metrics["runs"]})
    print(f"{EXPERIMENT}: {len(table)} runs compared; wrote {run}")
    return metrics


def run(p: Params) -> dict:
    runs = load_runs(find_runs(p))
    run_path = start_run(p)
    table = variants_table(runs)
    plot_rewards(run_path, runs)
    plot_format_rates(run_path, runs)
    metrics = save_results(run_path, table)
    return {"run_dir": str(run_path), "table": table, "metrics": metrics}


def main(argv=None):
    result = run_cli(run, Params, argv, description=__doc__.splitlines()[0])
    print(result["table"].to_string())
    return result


if __name__ == "__main__":
    main()
