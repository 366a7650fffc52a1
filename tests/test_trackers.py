"""Experiment trackers: SwanLab logs offline into the run folder without a key; a missing tracker is one line."""

import pytest

from lab_utils.core.paths import output_dir
from lab_utils.training.trainer import check_report_to, swanlab_mode
from scripts import sft_alpaca
from tests.helpers import TINY_SFT

TINY = {**TINY_SFT, "max_rows": 8, "max_steps": 1}


def test_swanlab_mode_follows_the_api_key(monkeypatch):
    monkeypatch.delenv("SWANLAB_API_KEY", raising=False)
    assert swanlab_mode() == "offline"
    monkeypatch.setenv("SWANLAB_API_KEY", "not-a-real-key")
    assert swanlab_mode() == "online"


def test_a_tracker_that_is_not_installed_stops_before_the_run_folder(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "swanlab" else real(name, *a))
    with pytest.raises(ValueError, match=r"report_to='swanlab' needs the swanlab package"):
        check_report_to("swanlab")
    with pytest.raises(SystemExit, match=r"^error: report_to='swanlab' needs the swanlab package"):
        sft_alpaca.main(["--max_steps", "1", "--report_to", "swanlab", "--run_name", "no-tracker"])
    assert not (output_dir() / "sft_alpaca" / "no-tracker").exists()
    check_report_to("tensorboard")
    check_report_to("none")


def test_swanlab_offline_run_leaves_its_log_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("swanlab", reason="optional extra: make setup-trackers")
    monkeypatch.delenv("SWANLAB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no login file of the developer's is read or written
    sft_alpaca.run(sft_alpaca.Params(**{**TINY, "report_to": "swanlab"}, run_name="swan"))
    logs = list((output_dir() / "sft_alpaca" / "swan" / "swanlog").glob("run-*/run-*.swanlab"))
    assert len(logs) == 1 and b"train/loss" in logs[0].read_bytes()  # the trainer's records, logged offline
    import swanlab

    assert not swanlab.has_run()  # finished with the run: the next one starts its own log
