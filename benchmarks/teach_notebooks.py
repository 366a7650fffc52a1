"""How long each classroom notebook takes headless: a lesson must finish in seconds on a laptop CPU.

    python -m benchmarks.teach_notebooks                     # teach_svd, teach_als (+ teach_lora_rank if a run exists)
    python -m benchmarks.teach_notebooks --adapter_run sft_alpaca/demo --out

Each notebook runs through papermill exactly as a student's kernel would (kernel start included),
with its default parameters. The table shows the seconds and the ratio to the classroom budget
(CLASSROOM_BUDGET_S); a ratio above 1 means the lesson is too slow for a class. Timing lives here,
not in the tests: on a loaded 2-core machine a test with a wall-clock limit fails for the wrong reason.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import ratio, report
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute

CLASSROOM_BUDGET_S = 30.0
COLUMNS = ["notebook", "seconds", "vs_budget", "status"]


def time_notebook(name: str, parameters: dict, out_dir: Path) -> dict:
    started = time.perf_counter()
    try:
        execute(NOTEBOOKS_DIR / f"{name}.ipynb", out_dir / f"{name}.ipynb", {"run_name": "bench", **parameters})
        status = "ok"
    except Exception as err:  # a failing notebook is a row, not a crash of the whole table
        status = f"failed: {str(err).strip().splitlines()[0][:80]}"
    seconds = round(time.perf_counter() - started, 1)
    return {"notebook": name, "seconds": seconds, "vs_budget": ratio(seconds, CLASSROOM_BUDGET_S), "status": status}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter_run", default="", help="finished SFT run for teach_lora_rank (else left out)")
    parser.add_argument("--out", nargs="?", const="", default=None,
                        help="write JSON (default folder: benchmarks/results/)")
    a = parser.parse_args(argv)
    lessons = {"teach_svd": {}, "teach_als": {}}
    if a.adapter_run:
        lessons["teach_lora_rank"] = {"adapter_run": a.adapter_run}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LAB_OUTPUT_DIR", str(Path(tmp) / "outputs"))
        rows = [time_notebook(name, params, Path(tmp)) for name, params in lessons.items()]
    return report("teach_notebooks", f"classroom notebooks, headless (budget {CLASSROOM_BUDGET_S:.0f} s each)",
                  a, rows, COLUMNS)


if __name__ == "__main__":
    main()
