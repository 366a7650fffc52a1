"""Notebook helpers: read and write a parameters cell, execute a notebook headless with papermill.

Every notebook in notebooks/ has exactly one cell tagged `parameters` made of
plain literal assignments (`name = value  # help`), with the same names and defaults
as its script's Params. The cell is generated from the Params (`parameters_source`:
values = defaults, comments = each knob's help, lab_utils.core.config.field_help), by
`python -m scripts.notebook_params` (`make notebook-params`); a test fails when a cell is
stale. These helpers are what the tests, `make demo` and the batch runner use, so the
rule is checked in one place.
"""

import ast
import json
import os
from contextlib import contextmanager
from pathlib import Path

from lab_utils.core.config import defaults, field_help, knob_sections
from lab_utils.core.paths import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# Headless runs use ipykernel's own spec, "python3": the interpreter papermill itself runs on, present
# in every Jupyter install, so a fresh clone (CI) needs no registered kernel. The notebooks name it
# in their metadata too, so `papermill in.ipynb out.ipynb` works anywhere without `-k`; in `make lab`
# it is this virtualenv. `make setup` also registers the virtualenv as the kernel "finetune-lab",
# for choosing it by name from a Jupyter installed elsewhere (AutoDL's, a system-wide one).
KERNEL_NAME = "python3"
JUPYTER_KERNEL_NAME = "finetune-lab"


def read_notebook(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _parameters_cell(notebook: dict, path) -> dict:
    cells = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def parameters_cell(path) -> dict:
    """The literal values assigned in the cell tagged `parameters`."""
    source = "".join(_parameters_cell(read_notebook(path), path)["source"])
    values = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{path}: parameters cell may only hold `name = literal` lines")
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def parameters_source(params_cls) -> str:
    """The parameters cell a notebook of `params_cls` holds: one `name = default  # help` line per knob,
    grouped under the same headings as --help and --print_config."""
    values, helps, lines = defaults(params_cls), field_help(params_cls), []
    for section, names in knob_sections(params_cls):
        lines += [f"# {section}"] if section else []
        lines += [f"{name} = {values[name]!r}  # {helps[name]}".rstrip(" #") for name in names]
    return "\n".join(lines)


def write_parameters_cell(path, params_cls) -> bool:
    """Rewrite the notebook's parameters cell from `params_cls`; True if it changed. Outputs stay stripped."""
    notebook = read_notebook(path)
    cell = _parameters_cell(notebook, path)
    source = parameters_source(params_cls)
    if "".join(cell["source"]) == source:
        return False
    cell["source"] = source.splitlines(keepends=True)
    # the layout Jupyter itself writes (nbformat: indent 1, unescaped text, final newline): minimal diffs
    Path(path).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def code_cells(path) -> list[str]:
    return ["".join(c["source"]) for c in read_notebook(path)["cells"] if c["cell_type"] == "code"]


def execute(notebook, output, parameters: dict | None = None, timeout: int | None = None, log_output=False):
    """Run a notebook headless with papermill, from the repo root, on this interpreter's kernel."""
    import papermill as pm

    env_path = str(REPO_ROOT)
    if env_path not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (env_path, os.environ.get("PYTHONPATH")) if p)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with headless_progress():
        return pm.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters or {},
            cwd=str(REPO_ROOT),
            kernel_name=KERNEL_NAME,
            execution_timeout=timeout,
            log_output=log_output,
            progress_bar=False,
        )


@contextmanager
def headless_progress():
    """Kernels started meanwhile draw progress as plain log lines (lab_utils/core/progress.py): under
    papermill no frontend renders widgets, and the output is read as a log. LAB_PROGRESS, if
    set, wins."""
    saved = os.environ.get("LAB_PROGRESS")
    os.environ["LAB_PROGRESS"] = saved or "log"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["LAB_PROGRESS"]
