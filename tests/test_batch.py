"""The batch runner: grid names, dry-run validation, a real two-run batch with a failure, resume, the report."""

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import pandas as pd
import psutil
import pytest
import yaml

from lab_utils.core import plots
from lab_utils.core.paths import REPO_ROOT
from scripts import batch


def write_batch(tmp_path, spec: dict):
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


class ReportParser(HTMLParser):
    """Counts what a reader of report.html sees: table rows, embedded images, links."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.links = 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows += 1
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a":
            self.links.append(attrs.get("href", ""))


def test_grid_expands_to_readable_names(tmp_path):
    path = write_batch(tmp_path, {"name": "g", "runs": [
        {"notebook": "sft_alpaca", "config": "configs/sft_alpaca.yaml",
         "grid": {"lora_r": [8, 16], "learning_rate": [1.0e-4, 2.0e-4]}},
        {"notebook": "teach_svd"},
    ]})
    name, runs = batch.load_batch(path)
    assert name == "g"
    assert [r.name for r in runs] == [
        "sft_alpaca-lora_r=8-learning_rate=0.0001", "sft_alpaca-lora_r=8-learning_rate=0.0002",
        "sft_alpaca-lora_r=16-learning_rate=0.0001", "sft_alpaca-lora_r=16-learning_rate=0.0002", "teach_svd"]
    first = runs[0].parameters
    assert first["lora_r"] == 8 and first["learning_rate"] == 1.0e-4
    assert first["run_name"] == runs[0].name  # the experiment's folder is named after the run
    assert first["max_steps"] == 30  # the rest comes from the config file
    assert batch.validate(runs) == []


def test_duplicate_names_and_unknown_keys_are_errors(tmp_path):
    twice = write_batch(tmp_path, {"name": "d", "runs": [{"notebook": "teach_svd"}, {"notebook": "teach_svd"}]})
    with pytest.raises(batch.BatchError, match="appear twice"):
        batch.load_batch(twice)
    typo = write_batch(tmp_path, {"name": "t", "runs": [{"notebook": "teach_svd", "parms": {}}]})
    with pytest.raises(batch.BatchError, match="parms"):
        batch.load_batch(typo)


def test_dry_run_rejects_an_unknown_parameter_and_a_wrong_type(tmp_path, capsys):
    path = write_batch(tmp_path, {"name": "bad", "runs": [
        {"notebook": "teach_svd", "params": {"max_sides": 64}},
        {"notebook": "teach_als", "params": {"rank": "ten"}},
    ]})
    assert batch.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "teach_svd: unknown parameter(s) ['max_sides']" in err
    assert "rank='ten' is str" in err
    assert not (tmp_path / "outputs" / "batch" / "bad").exists()  # nothing ran, nothing written


def test_loss_curves_plot_overlays_runs(tmp_path):
    histories = {"r=4": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.7}],
                 "r=8": [{"step": 1, "loss": 2.1}, {"step": 2, "loss": 1.2}]}
    fig = plots.plot_loss_curves(histories, tmp_path / "curves.png")
    assert [line.get_label() for line in fig.axes[0].lines] == ["r=4", "r=8"]
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.notebook
def test_batch_with_a_failure_report_and_resume(tmp_path, monkeypatch):
    svd = {"image": "synthetic", "max_side": 48, "grid_ranks": [1, 4]}
    path = write_batch(tmp_path, {"name": "smoke", "defaults": {"timeout": 120}, "runs": [
        {"notebook": "teach_svd", "name": "good", "params": svd},
        # a photo that does not exist: the notebook's first data cell raises LabPathError
        {"notebook": "teach_svd", "name": "broken", "params": {**svd, "image": "no_such_photo.png"}},
    ]})
    assert batch.main([str(path)]) == 1  # a failed run makes the batch's exit status non-zero
    folder = tmp_path / "outputs" / "batch" / "smoke"
    state = json.loads((folder / "batch_state.json").read_text())
    good, broken = state["runs"]["good"], state["runs"]["broken"]
    assert good["status"] == "finished" and good["error"] is None
    assert broken["status"] == "failed"
    assert broken["error"]["ename"] == "LabPathError" and "no_such_photo.png" in broken["error"]["evalue"]
    assert isinstance(broken["error"]["exec_count"], int)
    assert good["peak_rss_gb"] > 0.01  # the kernel holds numpy + matplotlib: tens of MB at least
    # each run's artifacts, executed notebook and log sit in its own folder
    assert (folder / "good" / "teach_svd" / "good" / "run_complete.json").exists()
    assert (folder / "good" / "teach_svd.ipynb").exists() and (folder / "broken" / "teach_svd.ipynb").exists()
    assert "Executing Cell" in (folder / "broken" / "run.log").read_text()  # the live log, cell by cell

    table = pd.read_csv(folder / "metrics.csv")
    assert list(table["run"]) == ["good", "broken"]
    assert list(table["status"]) == ["finished", "failed"]
    assert "image" in table.columns and "max_side" not in table.columns  # only what varies
    assert "LabPathError" in table.loc[1, "error"]
    page = ReportParser()
    page.feed((folder / "report.html").read_text())
    assert page.rows == 3  # header + one row per run
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "good/teach_svd.ipynb" in page.links
    assert "[good/teach_svd.ipynb](good/teach_svd.ipynb)" in (folder / "report.md").read_text()

    # without --resume an existing batch is never overwritten
    assert batch.main([str(path)]) == 2
    # --resume reruns only the failure (fixed in the batch file here), not the finished run
    spec = yaml.safe_load(path.read_text())
    spec["runs"][1]["params"]["image"] = "synthetic"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert batch.main([str(path), "--resume"]) == 0
    after = json.loads((folder / "batch_state.json").read_text())["runs"]
    assert after["good"]["started_at"] == good["started_at"]  # untouched
    assert after["broken"]["status"] == "finished" and after["broken"]["started_at"] >= broken["started_at"]
    assert list(pd.read_csv(folder / "metrics.csv")["status"]) == ["finished", "finished"]
    assert batch.main([str(path), "--report"]) == 0


def test_a_batch_killed_mid_notebook_resumes_only_what_did_not_finish(tmp_path):
    """kill -9 on the runner's process group while the second notebook runs, then --resume."""
    svd = {"image": "synthetic", "max_side": 48, "grid_ranks": [1, 4]}
    path = write_batch(tmp_path, {"name": "killed", "defaults": {"timeout": 300}, "runs": [
        {"notebook": "teach_svd", "name": name, "params": svd} for name in ("first", "second", "third")]})
    folder = tmp_path / "outputs" / "batch" / "killed"
    runner = subprocess.Popen([sys.executable, "-m", "scripts.batch", str(path)], cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = folder / "second" / "run.log"
    deadline = time.monotonic() + 600
    while not (log.exists() and "Executing Cell 2" in log.read_text()):  # the second notebook is running
        assert runner.poll() is None and time.monotonic() < deadline, "the batch ended before the second run"
        time.sleep(0.2)
    kernels = psutil.Process(runner.pid).children(recursive=True)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    # the kernel runs in its own session; it must notice its runner is gone and stop, not train on as an orphan
    assert not psutil.wait_procs(kernels, timeout=60)[1], "a kernel outlived its killed batch runner"

    state = json.loads((folder / "batch_state.json").read_text())["runs"]
    assert state["first"]["status"] == "finished" and state["second"]["status"] == "interrupted"
    assert "third" not in state
    assert batch.main([str(path), "--report"]) == 0  # a report of the killed batch says where it stopped
    assert list(pd.read_csv(folder / "metrics.csv")["status"]) == ["finished", "interrupted"]

    assert batch.main([str(path), "--resume"]) == 0
    after = json.loads((folder / "batch_state.json").read_text())["runs"]
    assert after["first"]["started_at"] == state["first"]["started_at"]  # finished before: not rerun
    assert after["second"]["status"] == after["third"]["status"] == "finished"
    assert after["second"]["started_at"] >= state["second"]["started_at"]
    table = pd.read_csv(folder / "metrics.csv")
    assert list(table["run"]) == ["first", "second", "third"] and set(table["status"]) == {"finished"}
    page = ReportParser()
    page.feed((folder / "report.html").read_text())
    assert page.rows == 4  # header + every run: the report is whole
    for name in ("first", "second", "third"):
        assert (folder / name / "teach_svd" / name / "run_complete.json").exists()


def test_a_second_runner_on_the_same_batch_stops_at_once(tmp_path, capsys):
    path = write_batch(tmp_path, {"name": "twice", "runs": [{"notebook": "teach_svd"}]})
    folder = tmp_path / "outputs" / "batch" / "twice"
    hold = ("import sys, time; from lab_utils.core import locks; locks.hold_run(sys.argv[1]); "
            "print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(folder)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert batch.main([str(path), "--overwrite"]) == 2
        assert f"is in use by pid {holder.pid}" in capsys.readouterr().err
        assert not folder.exists()  # --overwrite did not delete anything
    finally:
        holder.kill()
        holder.wait()
