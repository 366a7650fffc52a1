"""The SVD and ALS teaching notebooks and scripts: parity, headless execution, the CLI.

How long a lesson takes is measured by benchmarks/teach_notebooks.py, not asserted here."""

import json
from dataclasses import asdict

import pytest

from lab_utils.core.config import load_yaml
from lab_utils.core.notebooks import NOTEBOOKS_DIR, code_cells, execute, parameters_cell
from lab_utils.core.paths import REPO_ROOT
from scripts import teach_als, teach_svd

LESSONS = {"teach_svd": teach_svd, "teach_als": teach_als}


@pytest.mark.parametrize("name", LESSONS)
def test_notebook_parameters_match_params_and_config(name):
    defaults = asdict(LESSONS[name].Params())
    assert parameters_cell(NOTEBOOKS_DIR / f"{name}.ipynb") == defaults
    assert load_yaml(REPO_ROOT / "configs" / f"{name}.yaml") == defaults
    for source in code_cells(NOTEBOOKS_DIR / f"{name}.ipynb"):
        assert "def " not in source and "class " not in source


@pytest.mark.notebook
@pytest.mark.parametrize("name", LESSONS)
def test_notebook_executes_headless(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "out"))
    executed = execute(NOTEBOOKS_DIR / f"{name}.ipynb", tmp_path / f"{name}.ipynb", {"run_name": "nb"})
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    run = tmp_path / "out" / name / "nb"
    assert (run / "metrics.json").exists() and (run / "run_complete.json").exists()


def test_svd_cli_with_config_and_override(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    result = teach_svd.main(["--config", "configs/teach_svd.yaml", "--image", "synthetic", "--max_side", "96",
                             "--grid_ranks", "[1, 4]", "--run_name", "cli"])
    run = tmp_path / "teach_svd" / "cli"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["shape"] == [96, 96] and metrics["full_rank"] == 96
    assert metrics["max_gap_error_vs_eckart_young"] < 1e-9  # measured error == Eckart-Young at every rank
    assert [row["rank"] for row in metrics["grid"]] == [1, 4]
    for figure in ("reconstructions", "spectrum", "error_vs_rank", "storage_vs_rank"):
        assert (run / f"{figure}.png").stat().st_size > 0
    assert json.loads((run / "params.json").read_text())["max_side"] == 96
    assert result["run_dir"] == str(run)
    with pytest.raises(SystemExit, match="already finished"):  # a finished run is never overwritten unless asked
        teach_svd.main(["--image", "synthetic", "--max_side", "32", "--run_name", "cli"])


def test_als_cli_with_config_and_override(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    teach_als.main(["--config", "configs/teach_als.yaml", "--n_users", "150", "--n_items", "100",
                    "--choose_by_validation", "false", "--rank", "5", "--reg", "0.03", "--run_name", "cli"])
    run = tmp_path / "teach_als" / "cli"
    metrics = json.loads((run / "metrics.json").read_text())
    row = metrics["table"][0]
    assert row["als"] < row["user_item_bias"] < row["global_mean"]
    assert row["als_vs_truth"] < row["noise_std"]
    assert json.loads((run / "params.json").read_text())["rank"] == 5
    assert metrics["choices"] == [{"split": "synthetic", "rank": 5, "reg": 0.03, "valid_rmse": None, "grid": []}]
    assert metrics["mean_rmse"] == row["als"]
    for figure in ("rmse_history", "rmse_vs_rank", "rmse_vs_reg", "item_embedding"):
        assert (run / f"{figure}.png").stat().st_size > 0


def test_timing_benchmark_reports_a_failing_notebook_as_a_row(tmp_path):
    from benchmarks.teach_notebooks import CLASSROOM_BUDGET_S, time_notebook

    row = time_notebook("no_such_lesson", {}, tmp_path)
    assert row["notebook"] == "no_such_lesson" and row["status"].startswith("failed:")
    assert row["vs_budget"] == round(row["seconds"] / CLASSROOM_BUDGET_S, 2) or row["seconds"] == 0
