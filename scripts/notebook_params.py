"""Regenerate every notebook's `parameters` cell from its script's Params: values = the defaults,
a trailing comment = each knob's help (the comment on its line in the dataclass), under the same
headings as `--help`. Run it after adding or changing a knob; a test fails while a cell is stale.

    python -m scripts.notebook_params            # rewrite the stale cells (make notebook-params)
    python -m scripts.notebook_params --check    # only list them; exit status 1 if any
"""

import argparse
import importlib

from lab_utils.core.notebooks import NOTEBOOKS_DIR, parameters_source, read_notebook, write_parameters_cell


def notebook_params():
    """(notebook path, its script's Params) for every notebook in notebooks/ (scripts/<stem>.py)."""
    paths = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    return [(path, importlib.import_module(f"scripts.{path.stem}").Params) for path in paths]


def stale(path, params_cls) -> bool:
    cells = [c for c in read_notebook(path)["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    return not cells or "".join(cells[0]["source"]) != parameters_source(params_cls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale cells and exit 1 if any; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        old = [path.name for path, params_cls in notebook_params() if stale(path, params_cls)]
        print("stale parameters cells: " + ", ".join(old) if old else "every parameters cell is up to date")
        return 1 if old else 0
    for path, params_cls in notebook_params():
        print(f"{path.name}: {'rewritten' if write_parameters_cell(path, params_cls) else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
