"""Headless batch runs: many notebooks x parameters under papermill, one summary report.

    python -m scripts.batch configs/batch/cpu_smoke.yaml              # run every run, then the report
    python -m scripts.batch configs/batch/cpu_smoke.yaml --dry-run    # validate only, nothing trains
    python -m scripts.batch configs/batch/cpu_smoke.yaml --resume     # skip finished runs, rerun failed ones
    python -m scripts.batch configs/batch/cpu_smoke.yaml --report     # rebuild the report from what is on disk

A batch file is flat-ish YAML:

    name: cpu_smoke                   # the batch folder: $LAB_OUTPUT_DIR/batch/<name>/
    defaults:                         # applied to every run (a run's own keys win)
      timeout: 600                    # seconds per cell (papermill's execution_timeout)
      params: {overwrite: true}       # notebook parameters for every run
    runs:
      - notebook: sft_alpaca          # notebooks/<name>.ipynb, or a path from the repo root
        config: configs/sft_alpaca.yaml   # optional: the same flat YAML papermill -f takes
        params: {max_steps: 10}       # optional: overrides on top of the config
        grid: {lora_r: [8, 16]}       # optional: one run per combination: sft_alpaca-lora_r=8, ...
        name: sft                     # optional: the run's name (default: the notebook's name)

Parameters resolve as: the config file < the run's name as `run_name` (where the
notebook has one) < defaults.params < the run's params < its grid point. Every
name must exist in the notebook's parameters cell (read as Python, as the parity test does):
a typo is an error before anything trains, not a silently ignored value.

Each run gets its own LAB_OUTPUT_DIR, $LAB_OUTPUT_DIR/batch/<batch>/<run>/, so
its artifacts, the executed notebook (<notebook>.ipynb) and the live log
(run.log) sit together. A failed run is recorded (exception name, message, the
cell's execution count) and the batch goes on. batch_state.json is rewritten
atomically before each run (the run marked "interrupted": what stays if the runner
is killed, so --resume reruns it and --report shows where it stopped) and after it.
One runner per batch folder: a second one stops with one line (lab_utils/core/locks).
A notebook kernel whose runner was killed notices and exits within a second or so
(ipykernel's parent poller), releasing its run's lock for the resumed batch. The report
(report.md, report.html, metrics.csv) is built from batch_state.json and from each run's
metrics.json / history.json.
"""

import argparse
import base64
import html
import io
import itertools
import json
import logging
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from lab_utils.core import plots
from lab_utils.core.config import ConfigError, load_yaml
from lab_utils.core.locks import RunLockedError, hold_run, release_run
from lab_utils.core.machine import MemoryPoller
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute, parameters_cell
from lab_utils.core.paths import REPO_ROOT, output_dir, slug, write_then_rename
from lab_utils.core.progress import progress_bar

STATE_FILE = "batch_state.json"
BATCH_KEYS = {"name", "defaults", "runs"}
DEFAULT_KEYS = {"timeout", "params"}
RUN_KEYS = {"notebook", "config", "params", "grid", "name", "timeout"}
# The metric a run is judged by: the first of these present in metrics.json (top-level
# numbers), else in run_complete.json's summary; none if no key matches.
KEY_METRICS = ("accuracy_after", "accuracy", "bleu4", "rougeL", "rouge1", "reward_mean",
               "rmse", "mean_rmse", "preference_accuracy_after")
# Peak GPU memory a run may record itself in metrics.json (torch.cuda.max_memory_allocated), in GB.
CUDA_PEAK_KEYS = ("cuda_peak_memory_gb", "peak_cuda_memory_gb", "gpu_peak_memory_gb")
MEMORY_POLL_SECONDS = 0.5


class BatchError(ValueError):
    """A batch file that cannot run as written; the message says which run and key."""


@dataclass
class Run:
    name: str
    notebook: Path
    parameters: dict
    timeout: int | None = None
    grid_point: dict = field(default_factory=dict)


# --- reading a batch file --------------------------------------------------------------------

def notebook_path(name: str) -> Path:
    """`sft_alpaca` -> notebooks/sft_alpaca.ipynb; a path is taken from the repo root."""
    path = Path(name)
    if path.suffix != ".ipynb":
        return NOTEBOOKS_DIR / f"{name}.ipynb"
    return path if path.is_absolute() else REPO_ROOT / path


def check_mapping(value, allowed: set, origin: str) -> dict:
    value = value or {}
    if not isinstance(value, dict):
        raise BatchError(f"{origin}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise BatchError(f"{origin}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def grid_points(grid: dict, origin: str) -> list[dict]:
    """{'lora_r': [8, 16], 'learning_rate': [1e-4]} -> one dict per combination, in file order."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BatchError(f"{origin}: grid.{key} must be a non-empty list, got {values!r}")
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]


def point_name(base: str, point: dict) -> str:
    """Readable, folder-safe: sft_alpaca-lora_r=8-learning_rate=0.0001."""
    return slug("-".join([base] + [f"{k}={v}" for k, v in point.items()]))


def expand_entry(entry: dict, defaults: dict, index: int, batch_file) -> list[Run]:
    origin = f"{batch_file}: runs[{index}]"
    entry = check_mapping(entry, RUN_KEYS, origin)
    if "notebook" not in entry:
        raise BatchError(f"{origin}: every run needs a `notebook`")
    notebook = notebook_path(entry["notebook"])
    if not notebook.exists():
        raise BatchError(f"{origin}: notebook '{entry['notebook']}' not found ({notebook})")
    config = load_yaml(REPO_ROOT / entry["config"]) if entry.get("config") else {}
    grid = entry.get("grid") or {}
    if not isinstance(grid, dict):
        raise BatchError(f"{origin}: grid must map parameter names to lists of values")
    base = entry.get("name") or notebook.stem
    has_run_name = "run_name" in parameters_cell(notebook)
    runs = []
    for point in grid_points(grid, origin):
        name = point_name(base, point)
        parameters = {**config, **({"run_name": name} if has_run_name else {}),
                      **(defaults.get("params") or {}), **(entry.get("params") or {}), **point}
        runs.append(Run(name, notebook, parameters, entry.get("timeout", defaults.get("timeout")), point))
    return runs


def load_batch(path) -> tuple[str, list[Run]]:
    """The batch's name and its runs, grids expanded. Structural mistakes raise BatchError."""
    spec = check_mapping(yaml.safe_load(Path(path).read_text(encoding="utf-8")), BATCH_KEYS, str(path))
    defaults = check_mapping(spec.get("defaults"), DEFAULT_KEYS, f"{path}: defaults")
    if not spec.get("runs"):
        raise BatchError(f"{path}: `runs` must list at least one run")
    runs = [run for i, entry in enumerate(spec["runs"]) for run in expand_entry(entry, defaults, i, path)]
    names = [run.name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BatchError(f"{path}: run names {duplicates} appear twice; give those runs a `name`")
    return slug(spec.get("name") or Path(path).stem), runs


# --- validation (--dry-run, and always before the first run) ---------------------------------

def type_problem(name: str, value, default) -> str | None:
    """A value whose type cannot stand in for the notebook's default (ints may stand for floats)."""
    if default is None or value is None:
        return None
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return None
    return f"{name}={value!r} is {type(value).__name__}, the notebook's default {default!r} is {expected.__name__}"


def validate(runs: list[Run]) -> list[str]:
    """Every problem of every run, as one line each (empty: the batch can run)."""
    problems = []
    for run in runs:
        # The parameters cell read as Python: papermill's inspect_notebook parses it by regex and misses
        # lines whose help comment it cannot read (`lora_r = 16  # ... (more = more capacity ...)`)
        defaults = parameters_cell(run.notebook)
        unknown = sorted(set(run.parameters) - set(defaults))
        if unknown:
            problems.append(f"{run.name}: unknown parameter(s) {unknown} for {run.notebook.name}; "
                            f"known: {sorted(defaults)}")
        problems += [f"{run.name}: {p}" for name, value in run.parameters.items() if name in defaults
                     if (p := type_problem(name, value, defaults[name]))]
    return problems


# --- executing one run -----------------------------------------------------------------------

@contextmanager
def environment(**values):
    """Set environment variables for the block (papermill's kernel inherits them), then restore."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def log_to_file(path: Path):
    """Papermill's cell output (log_output=True) goes to the run's own log file, not the console."""
    logger = logging.getLogger("papermill")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.level, logger.propagate = saved


def failure(err: Exception) -> dict:
    """What went wrong, in the words of the notebook's own exception where papermill has them."""
    message = str(getattr(err, "evalue", err)).strip()
    return {"ename": getattr(err, "ename", type(err).__name__),
            "evalue": message.splitlines()[-1] if message else "",
            "exec_count": getattr(err, "exec_count", None)}


def run_record(run: Run, batch_dir: Path) -> dict:
    executed = batch_dir / run.name / run.notebook.name
    return {"name": run.name, "notebook": str(run.notebook.relative_to(REPO_ROOT)), "parameters": run.parameters,
            "grid_point": run.grid_point, "executed_notebook": str(executed.relative_to(batch_dir)),
            "log": f"{run.name}/run.log", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "error": None}


def execute_run(run: Run, batch_dir: Path) -> dict:
    """Run one notebook with its own LAB_OUTPUT_DIR; never raises for a notebook's failure."""
    folder = batch_dir / run.name
    folder.mkdir(parents=True, exist_ok=True)
    record = run_record(run, batch_dir)
    started = time.perf_counter()
    with (environment(LAB_OUTPUT_DIR=folder), log_to_file(folder / "run.log"),
          MemoryPoller(MEMORY_POLL_SECONDS) as memory):
        try:
            execute(run.notebook, batch_dir / record["executed_notebook"], run.parameters, timeout=run.timeout,
                    log_output=True)
            record["status"] = "finished"
        except Exception as err:  # PapermillExecutionError, a cell timeout, a dead kernel: record, go on
            record["status"], record["error"] = "failed", failure(err)
    record["duration_s"] = round(time.perf_counter() - started, 2)
    record["peak_rss_gb"] = round(memory.peak_rss_bytes / 2**30, 3)
    return record


# --- state ----------------------------------------------------------------------------------

def read_state(batch_dir: Path) -> dict:
    path = batch_dir / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"runs": {}}


def write_state(batch_dir: Path, state: dict) -> None:
    """Write, then rename: a crash never leaves half a state file."""
    with write_then_rename(batch_dir / STATE_FILE, overwrite=True) as staging:
        staging.write_text(json.dumps(state, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def prepare_batch_dir(batch_dir: Path, resume: bool, overwrite: bool) -> None:
    if batch_dir.exists() and not resume:
        if not overwrite:
            raise BatchError(f"batch folder {batch_dir} already exists; pass --resume to continue it "
                             "or --overwrite to start it again")
        shutil.rmtree(batch_dir)
    batch_dir.mkdir(parents=True, exist_ok=True)


def run_batch(batch_file, runs: list[Run], name: str, batch_dir: Path, resume: bool) -> dict:
    state = read_state(batch_dir)
    state.update(batch=name, batch_file=str(batch_file), order=[r.name for r in runs])
    todo = [r for r in runs if not (resume and state["runs"].get(r.name, {}).get("status") == "finished")]
    for skipped in sorted(set(r.name for r in runs) - set(r.name for r in todo)):
        print(f"[batch] {skipped}: finished before, skipped (--resume)")
    durations = []
    with progress_bar(total=len(todo), desc=f"batch {name}", unit="run") as bar:
        for run in todo:
            bar.set_postfix_str(run.name)
            # on disk before it starts: if this process is killed, the state (and --report) shows the run
            # as interrupted, and --resume runs it again
            state["runs"][run.name] = {**run_record(run, batch_dir), "status": "interrupted",
                                       "error": {"ename": "Interrupted", "evalue": "the batch runner stopped during "
                                                 "this run; --resume runs it again", "exec_count": None}}
            write_state(batch_dir, state)
            record = execute_run(run, batch_dir)
            bar.update(1)
            state["runs"][run.name] = record
            write_state(batch_dir, state)
            durations.append(record["duration_s"])
            left = len(todo) - len(durations)
            eta = sum(durations) / len(durations) * left
            detail = f" ({record['error']['ename']}: {record['error']['evalue']})" if record["error"] else ""
            bar.write(f"[batch] {run.name}: {record['status']} in {record['duration_s']:.1f} s{detail}; "
                      f"{left} left, ETA ~{eta:.0f} s")
    return state


# --- the report ------------------------------------------------------------------------------

def artifact_dir(run_folder: Path) -> Path | None:
    """The experiment's own run folder inside the batch run folder (it holds metrics.json)."""
    for marker in ("run_complete.json", "metrics.json", "history.json"):
        found = sorted(run_folder.rglob(marker))
        if found:
            return found[0].parent
    return None


def read_json_if(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path and path.exists() else None


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def key_metric(metrics: dict, summary: dict) -> tuple[str, float | None]:
    for source in (metrics, summary):
        for key in KEY_METRICS:
            if number(source.get(key)) is not None:
                return key, source[key]
    return "", None


def run_row(record: dict, batch_dir: Path, varied: list[str]) -> tuple[dict, list]:
    """One report row and the run's logged history (for the loss plot)."""
    parameters = effective_parameters(record)
    found = artifact_dir(batch_dir / record["name"])
    metrics = read_json_if(found / "metrics.json" if found else None) or {}
    summary = read_json_if(found / "run_complete.json" if found else None) or {}
    history = read_json_if(found / "history.json" if found else None) or []
    history = history if isinstance(history, list) else []
    losses = [r["loss"] for r in history if isinstance(r, dict) and number(r.get("loss")) is not None]
    evals = [r["eval_loss"] for r in history if isinstance(r, dict) and number(r.get("eval_loss")) is not None]
    metric_name, metric_value = key_metric(metrics, summary)
    cuda_peak = next((metrics[k] for k in CUDA_PEAK_KEYS if number(metrics.get(k)) is not None), None)
    error = record.get("error") or {}
    row = {
        "run": record["name"],
        "status": record["status"],
        "duration_s": record.get("duration_s"),
        **{
            k: json.dumps(parameters.get(k)) if isinstance(parameters.get(k), (list, dict)) else parameters.get(k)
            for k in varied
        },
        "train_loss": losses[-1] if losses else number(metrics.get("train_loss")),
        "eval_loss": next(
            (metrics[k] for k in ("eval_loss_after", "eval_loss") if number(metrics.get(k)) is not None),
            evals[-1] if evals else None,
        ),
        "key_metric": metric_name or None,
        "key_metric_value": metric_value,
        "peak_memory_gb": cuda_peak if cuda_peak is not None else record.get("peak_rss_gb"),
        "peak_memory_source": "cuda (metrics.json)" if cuda_peak is not None else "kernel RSS (polled)",
        "error": f"{error['ename']}: {error['evalue']} (cell {error['exec_count']})" if error else "",
        "notebook": record["executed_notebook"],
    }
    return row, history


def effective_parameters(record: dict) -> dict:
    """What the notebook ran with: its parameters cell, then what the batch injected."""
    notebook = REPO_ROOT / record["notebook"]
    return {**(parameters_cell(notebook) if notebook.exists() else {}), **record["parameters"]}


def varied_parameters(records: list[dict]) -> list[str]:
    """Names with more than one value among the runs that have them (run_name always varies: left out).

    Runs of different notebooks share few names; a name only one notebook has is
    not a difference between runs, so it is not a column.
    """
    effective = [effective_parameters(r) for r in records]
    names = sorted({k for e in effective for k in e} - {"run_name"})
    values = lambda k: {json.dumps(e[k], sort_keys=True) for e in effective if k in e}  # noqa: E731
    return [k for k in names if len(values(k)) > 1]


def png_base64(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f0f3f7; }
tr.failed td { background: #fdecea; }
tr.finished td.status { color: #1a7f37; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 1em 0; }
"""


def html_report(name: str, frame: pd.DataFrame, images: dict, wall_s: float) -> str:
    """One self-contained page: inline CSS, the table, plots as base64 PNG, links to the notebooks."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column, value in record.items():
            text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else value
            text = f"{text:.4g}" if isinstance(text, float) else html.escape(str(text))
            if column == "notebook":
                text = f'<a href="{html.escape(str(value))}">{text}</a>'
            cells.append(f'<td class="{column}">{text}</td>')
        rows.append(f'<tr class="{html.escape(str(record["status"]))}">{"".join(cells)}</tr>')
    figures = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        for title, data in images.items()
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>batch {html.escape(name)}</title>"
        f"<style>{HTML_STYLE}</style></head><body><h1>batch {html.escape(name)}</h1>"
        f"<p>{(frame['status'] == 'finished').sum()} finished, {(frame['status'] != 'finished').sum()} failed; "
        f"run time {wall_s:.0f} s. Key metric: first of {', '.join(KEY_METRICS)} in metrics.json.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{figures}</body></html>"
    )


def markdown_report(name: str, frame: pd.DataFrame, wall_s: float, plot_files: list[str]) -> str:
    shown = frame.assign(notebook=[f"[{n}]({n})" for n in frame["notebook"]])
    shown = shown.astype(object).where(shown.notna(), "")  # an empty cell, not "nan", where a run has no value
    lines = [
        f"# batch {name}",
        "",
        f"{(frame['status'] == 'finished').sum()} finished, {(frame['status'] != 'finished').sum()} failed; "
        f"run time {wall_s:.0f} s.",
        "",
        f"Key metric: the first of {', '.join(KEY_METRICS)} found in the run's metrics.json "
        "(then run_complete.json); empty if none. Peak memory: torch CUDA peak from metrics.json "
        "if the run recorded one, else the kernel's resident memory polled every "
        f"{MEMORY_POLL_SECONDS} s.",
        "",
        shown.to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    lines += [f"![{p}]({p})" for p in plot_files]
    return "\n".join(lines) + "\n"


def write_report(batch_dir: Path, state: dict) -> Path:
    """report.md, report.html and metrics.csv in the batch folder, from what is on disk."""
    import matplotlib.pyplot as plt

    names = [n for n in state.get("order", []) if n in state["runs"]] or list(state["runs"])
    records = [state["runs"][n] for n in names]
    if not records:
        raise BatchError(f"{batch_dir}: no run recorded yet, nothing to report")
    varied = varied_parameters(records)
    rows, histories = zip(*(run_row(r, batch_dir, varied) for r in records))
    frame = pd.DataFrame(list(rows))
    frame.to_csv(batch_dir / "metrics.csv", index=False)
    wall_s = sum(r.get("duration_s") or 0 for r in records)
    figures = {
        "run durations": plots.plot_batch_durations(
            names, frame["duration_s"].tolist(), frame["status"].tolist(), batch_dir / "durations.png"
        )
    }
    curves = {n: h for n, h in zip(names, histories) if any("loss" in r for r in h if isinstance(r, dict))}
    if curves:
        figures["training loss"] = plots.plot_loss_curves(curves, batch_dir / "loss_curves.png")
    images = {title: png_base64(fig) for title, fig in figures.items()}
    plt.close("all")
    (batch_dir / "report.md").write_text(
        markdown_report(
            state.get("batch", batch_dir.name),
            frame,
            wall_s,
            ["durations.png"] + (["loss_curves.png"] if curves else []),
        ),
        encoding="utf-8",
    )
    report = batch_dir / "report.html"
    report.write_text(html_report(state.get("batch", batch_dir.name), frame, images, wall_s), encoding="utf-8")
    return report


# --- command line ----------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch_file", help="YAML batch file, e.g. configs/batch/cpu_smoke.yaml")
    parser.add_argument("--resume", action="store_true", help="skip finished runs, rerun failed and missing ones")
    parser.add_argument("--dry-run", action="store_true", help="validate notebooks and parameters; run nothing")
    parser.add_argument("--report", action="store_true", help="only rebuild the report from the batch folder")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing batch folder and start again")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    batch_dir = None
    try:
        name, runs = load_batch(args.batch_file)
        batch_dir = output_dir() / "batch" / name
        if args.report:
            print(f"[batch] report: {write_report(batch_dir, read_state(batch_dir))}")
            return 0
        problems = validate(runs)
        for run in runs:
            print(f"[batch] {run.name}: {run.notebook.name} {json.dumps(run.parameters, default=str)}")
        if problems:
            raise BatchError("batch not valid:\n  " + "\n  ".join(problems))
        if args.dry_run:
            print(f"[batch] dry run: {len(runs)} run(s) valid; nothing executed")
            return 0
        hold_run(batch_dir)  # one runner per batch folder: a second one stops here, before --overwrite deletes it
        prepare_batch_dir(batch_dir, args.resume, args.overwrite)
        started = time.perf_counter()
        state = run_batch(args.batch_file, runs, name, batch_dir, args.resume)
        report = write_report(batch_dir, state)
    except (BatchError, ConfigError, RunLockedError) as err:
        print(f"[batch] error: {err}", file=sys.stderr)
        return 2
    finally:
        if batch_dir is not None:
            release_run(batch_dir)  # a no-op unless this call locked it
    failed = [n for n, r in state["runs"].items() if r["status"] != "finished"]
    print(
        f"[batch] {name}: {len(state['runs']) - len(failed)} finished, {len(failed)} failed "
        f"in {time.perf_counter() - started:.0f} s; report: {report}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
