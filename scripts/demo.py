"""`make demo`: the alpaca SFT notebook, headless, on the embedded model, offline.

Runs notebooks/sft_alpaca.ipynb with papermill and configs/sft_alpaca.yaml
(rerunnable: the demo run is overwritten each time), then prints where the
executed notebook, the plot and the adapter are, and one before/after answer.
"""

import os
import sys
import time

import pandas as pd
import yaml

from lab_utils.artifacts import read_json
from lab_utils.notebooks import NOTEBOOKS_DIR, execute
from lab_utils.paths import REPO_ROOT, output_dir

CONFIG = REPO_ROOT / "configs" / "sft_alpaca.yaml"


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never touches a hub
    parameters = {**yaml.safe_load(CONFIG.read_text()), "overwrite": True}
    executed = output_dir() / "notebooks" / f"sft_alpaca-{parameters['run_name']}.ipynb"
    print(f"[demo] running notebooks/sft_alpaca.ipynb headless with {CONFIG.relative_to(REPO_ROOT)} ...", flush=True)
    started = time.time()
    execute(NOTEBOOKS_DIR / "sft_alpaca.ipynb", executed, parameters, log_output="-v" in (argv or sys.argv[1:]))
    run = output_dir() / "sft_alpaca" / parameters["run_name"]
    metrics = read_json(run / "metrics.json")
    losses = [r["loss"] for r in read_json(run / "history.json") if "loss" in r]
    row = pd.read_csv(run / "generations.csv").iloc[0]
    print(f"\n[demo] finished in {time.time() - started:.0f} s")
    print(f"  executed notebook : {executed}")
    print(f"  training plot     : {run / 'training.png'}")
    print(f"  LoRA adapter      : {run / 'adapter'}")
    print(f"  train loss        : {losses[0]:.3f} (step 1) -> {losses[-1]:.3f} (step {len(losses)})")
    print(f"  held-out loss     : {metrics['eval_loss_before']:.3f} -> {metrics['eval_loss_after']:.3f}")
    print(f"  prompt            : {row['prompt']!r}")
    print(f"  before            : {row['before']!r}")
    print(f"  after             : {row['after']!r}")


if __name__ == "__main__":
    main()
