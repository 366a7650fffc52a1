"""What several test files build the same way: tiny settings, data files written to disk, the shared datasets.

Fixtures live in conftest.py; these are plain functions and constants, imported by name.
"""

import json
import os
from pathlib import Path

import yaml

from lab_utils.models.random_models import SMOKE_MODEL, random_model_dir

REPO = Path(__file__).resolve().parent.parent

# The tiny random Llama (2 layers, hidden 64) with the real SmolLM2 tokenizer and chat template: the tests of
# mechanics (CLI, artifacts, resume, notebooks, locks) run on it in seconds; the learning tests use the real
# model. conftest.py builds it once per machine (it is cached under $LAB_MODELS_DIR/bench-random/).
TINY_LM = str(random_model_dir(SMOKE_MODEL))
# The smallest text SFT run that still goes through every step (40 rows, 2 steps, rank 4): each test
# that needs one starts from this and changes only what it tests.
TINY_SFT = dict(model=TINY_LM, max_rows=40, heldout_rows=2, max_steps=2, batch_size=4, lora_r=4, lora_alpha=8,
                max_new_tokens=4, max_seq_length=128, save_steps=1, report_to="none")

TUTOR_PROMPT = "You are a terse math tutor."  # conftest's finished_sft_run's system prompt (its Modelfile's SYSTEM)


def as_cli(settings: dict) -> list[str]:
    """--key=value arguments for a script's main() or a subprocess."""
    return [f"--{key}={value}" for key, value in settings.items()]


def shared_data_dir() -> Path:
    """The real datasets: $LAB_SHARED_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("LAB_SHARED_DATA", REPO.parent / "shared" / "data"))


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON object per line; a str row is written as it is (a broken line on purpose)."""
    texts = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def finished_cli_run(folder: Path, script, experiment: str, argv: list[str]) -> tuple[Path, str]:
    """Run `script.main(argv)` once with its outputs under `folder` (a module-scoped fixture's tmp folder):
    the finished run folder (argv's --run_name) and what the run printed."""
    import contextlib
    import io

    import pytest

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("LAB_OUTPUT_DIR", str(folder / "outputs"))
        script.main(argv)
    return folder / "outputs" / experiment / argv[argv.index("--run_name") + 1], printed.getvalue()


def write_config(folder: Path, settings: dict) -> Path:
    """A flat YAML config, as a user writes one for --config or papermill -f."""
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def write_sheet(path: Path, rows: list, title: str = "Sheet1") -> Path:
    """An .xlsx whose first sheet holds `rows` (the first row is the header)."""
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.title = title
    for row in rows:
        workbook.active.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path
