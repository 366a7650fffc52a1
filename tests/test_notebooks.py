"""Every notebook matches its script: same parameter names and defaults, configs valid for both."""

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest
import yaml

from lab_utils.core.notebooks import NOTEBOOKS_DIR, code_cells, parameters_cell, parameters_source, read_notebook
from lab_utils.core.paths import REPO_ROOT

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


def params_of(name: str):
    return importlib.import_module(f"scripts.{name}").Params


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_equals_script_params(notebook):
    defaults = dataclasses.asdict(params_of(notebook.stem)())
    assert parameters_cell(notebook) == defaults


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_generated_from_params_with_each_knobs_help(notebook):
    cell = next(c for c in read_notebook(notebook)["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cell["source"])
    assert source == parameters_source(params_of(notebook.stem)), (
        f"{notebook.name}: stale parameters cell; run `make notebook-params` (python -m scripts.notebook_params)")
    assert all(" = " not in line or "  # " in line for line in source.splitlines())  # every literal has its help


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_holds_no_logic_and_no_outputs(notebook):
    for source in code_cells(notebook):
        for node in ast.walk(ast.parse(source)):
            is_logic = isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Lambda))
            assert not is_logic, f"{notebook.name}: logic in a cell"
        assert "/root/" not in source and "/home/" not in source and "/content/" not in source
    for cell in read_notebook(notebook)["cells"]:
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None, f"{notebook.name}: strip outputs"


def experiment_of(config: Path) -> str:
    """configs/sft_alpaca_gpu.yaml -> sft_alpaca (the longest script name the file name starts with)."""
    scripts = sorted((p.stem for p in (REPO_ROOT / "scripts").glob("*.py")), key=len, reverse=True)
    return next(s for s in scripts if config.stem == s or config.stem.startswith(s + "_"))


ROLE_CONFIGS = {"sft_roleplay": "sft_alpaca"}  # configs that reuse another experiment's script


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_key_is_a_param(config):
    name = ROLE_CONFIGS.get(config.stem) or experiment_of(config)
    fields = {f.name for f in dataclasses.fields(params_of(name))}
    keys = set(yaml.safe_load(config.read_text()) or {})
    assert keys <= fields, f"{config.name}: unknown keys {keys - fields}"
    assert not any(str(v).startswith("/") for v in (yaml.safe_load(config.read_text()) or {}).values())
