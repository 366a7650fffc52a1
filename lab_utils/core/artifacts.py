"""Writing a run's artifacts: JSON metrics, tables (Markdown + CSV), logging setup.

Every experiment writes the same kinds of files so the batch report can read any run:
    params.json       the resolved Params
    metrics.json      flat numbers (final losses, scores, speeds, peak memory)
    history.json      every logged training record (step, loss, learning_rate, ...)
    *.md / *.csv      tables such as the before/after generations
    run_complete.json the marker written last (lab_utils/paths.mark_complete)
"""

import json
import logging
import math
from pathlib import Path

import pandas as pd


def _plain(value):
    """JSON-safe numbers: NaN/inf become None, numpy/torch scalars become Python ones."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(data, path) -> Path:
    """Write, then rename: a killed run never leaves a JSON file that is cut short."""
    from lab_utils.core.paths import write_then_rename

    path = Path(path)
    with write_then_rename(path, overwrite=True) as staging:
        staging.write_text(json.dumps(_plain(data), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def read_json(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(frame: pd.DataFrame, run_dir: Path, name: str) -> Path:
    """Save a table as <name>.csv (for pandas) and <name>.md (for people)."""
    frame.to_csv(Path(run_dir) / f"{name}.csv", index=False)
    markdown = Path(run_dir) / f"{name}.md"
    # a newline inside a cell would end the Markdown row; <br> keeps it in the cell
    cells = frame.apply(lambda col: col.map(lambda v: v.replace("\n", "<br>") if isinstance(v, str) else v))
    markdown.write_text(cells.to_markdown(index=False), encoding="utf-8")
    return markdown


def setup_logging(level=logging.INFO) -> None:
    logging.basicConfig(level=level, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
