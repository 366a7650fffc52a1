"""`make demo`: the alpaca SFT notebook, headless, on the embedded model, offline.

Runs notebooks/sft_alpaca.ipynb with papermill and configs/sft_alpaca.yaml
(rerunnable: the demo run is overwritten each time), then says in at most 15
lines what it did (data, steps, losses, one before/after answer, where the files
are) and what to try next.
"""

import os
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from lab_utils.core.artifacts import read_json
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute
from lab_utils.core.paths import REPO_ROOT, output_dir

CONFIG = REPO_ROOT / "configs" / "sft_alpaca.yaml"
MAX_SUMMARY_LINES = 15


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (shorter to read), else as it is."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def clip(text: str, width: int = 60) -> str:
    one_line = " ".join(str(text).split())
    return repr(one_line if len(one_line) <= width else one_line[: width - 1] + "…")


def summary(parameters: dict, run: Path, executed: Path, seconds: float) -> list[str]:
    """What the demo did and what to try next, from the files the run wrote."""
    metrics = read_json(run / "metrics.json")
    losses = [r["loss"] for r in read_json(run / "history.json") if "loss" in r]
    row = pd.read_csv(run / "generations.csv").iloc[0]
    speed = f", {metrics['train_tokens_per_second']:.0f} tokens/s" if metrics.get("train_tokens_per_second") else ""
    return [
        f"[demo] done in {seconds:.0f} s: LoRA r={parameters['lora_r']} on {parameters['model']}, "
        f"{metrics['rows_kept']} rows of {parameters['data_file']}, {metrics['global_step']} steps on "
        f"{metrics['device']} ({metrics['backend']} backend{speed})",
        f"  loss        train {losses[0]:.2f} -> {losses[-1]:.2f}, held-out {metrics['eval_loss_before']:.2f} -> "
        f"{metrics['eval_loss_after']:.2f}",
        f"  prompt      {clip(row['prompt'])}",
        f"  before      {clip(row['before'])}",
        f"  after       {clip(row['after'])}",
        f"  run folder  {shown(run)}/  (adapter/, training.png, metrics.json, generations.csv)",
        f"  notebook    {shown(executed)}  (executed, with its outputs)",
        "next:",
        "  make lab                 the notebooks in JupyterLab: edit the `parameters` cell, run all",
        "  other notebooks          sft_medical, grpo_gsm8k, sft_vision;"
        " teach_svd, teach_als, teach_lora_rank (seconds)",
        f"  this adapter             python -m scripts.evaluate_export --run_dir sft_alpaca/{parameters['run_name']}",
        "  on a GPU box             source env/autodl.env; make demo's notebook with configs/sft_alpaca_gpu.yaml:",
        "                           papermill notebooks/sft_alpaca.ipynb out.ipynb -f configs/sft_alpaca_gpu.yaml",
    ]


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never touches a hub
    parameters = {**yaml.safe_load(CONFIG.read_text()), "overwrite": True}
    executed = output_dir() / "notebooks" / f"sft_alpaca-{parameters['run_name']}.ipynb"
    print(f"[demo] running notebooks/sft_alpaca.ipynb headless with {CONFIG.relative_to(REPO_ROOT)} ...", flush=True)
    started = time.time()
    execute(NOTEBOOKS_DIR / "sft_alpaca.ipynb", executed, parameters, log_output="-v" in (argv or sys.argv[1:]))
    run = output_dir() / "sft_alpaca" / parameters["run_name"]
    print("\n".join(summary(parameters, run, executed, time.time() - started)))


if __name__ == "__main__":
    main()
