"""Resuming from the newest *whole* checkpoint: real checkpoints of a real short run, then damaged the way a
kill or a full disk during a save damages them (cut short, empty, missing), and a rerun that resumes."""

import shutil

import pytest

from lab_utils.core.artifacts import read_json
from lab_utils.core.paths import output_dir
from lab_utils.training.checkpoints import CheckpointError, checkpoint_problem, newest_whole_checkpoint
from scripts import sft_alpaca
from tests.helpers import TINY_SFT, as_cli

TINY = {**TINY_SFT, "save_total_limit": 3}



@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-step run with checkpoint-1 and checkpoint-2, trained once for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_OUTPUT_DIR", str(tmp_path_factory.mktemp("trained") / "outputs"))
        sft_alpaca.run(sft_alpaca.Params(**TINY, run_name="ckpt"))
        run = output_dir() / "sft_alpaca" / "ckpt"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    return run


def cut(path, keep: int | None = None):
    """Cut a file short as a kill during its write would: to `keep` bytes, default half of it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


DAMAGE = {
    "truncated adapter": (lambda c: cut(c / "adapter_model.safetensors"), "adapter_model.safetensors is cut short"),
    "empty adapter": (lambda c: cut(c / "adapter_model.safetensors", 0), "adapter_model.safetensors is 0 bytes"),
    "header only": (lambda c: cut(c / "adapter_model.safetensors", 2000), "adapter_model.safetensors is cut short"),
    "empty optimizer": (lambda c: cut(c / "optimizer.pt", 0), "optimizer.pt is empty"),
    "truncated optimizer": (lambda c: cut(c / "optimizer.pt"), "optimizer.pt is cut short"),
    "missing optimizer": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt missing"),
    "truncated scheduler": (lambda c: cut(c / "scheduler.pt", 100), "scheduler.pt is cut short"),
    "no trainer state": (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json missing"),
    "empty trainer state": (lambda c: cut(c / "trainer_state.json", 0), "trainer_state.json does not parse"),
}


def test_whole_checkpoints_pass(trained_run):
    for checkpoint in (trained_run / "checkpoints").iterdir():
        assert checkpoint_problem(checkpoint) is None, checkpoint


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_skipped_with_one_line(trained_run, tmp_path, capsys, damage):
    folder = shutil.copytree(trained_run / "checkpoints", tmp_path / "checkpoints")
    harm, reason = DAMAGE[damage]
    harm(folder / "checkpoint-2")
    assert newest_whole_checkpoint(folder) == str(folder / "checkpoint-1")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "checkpoint-2" in lines[0] and reason in lines[0], lines


def test_no_whole_checkpoint_is_one_line_naming_the_folder_and_overwrite(trained_run, tmp_path):
    folder = shutil.copytree(trained_run / "checkpoints", tmp_path / "checkpoints")
    cut(folder / "checkpoint-2" / "adapter_model.safetensors")
    (folder / "checkpoint-1" / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError) as err:
        newest_whole_checkpoint(folder)
    message = str(err.value)
    assert "\n" not in message and str(folder) in message and "overwrite: true" in message
    assert newest_whole_checkpoint(tmp_path / "none_yet") is None  # a fresh run: nothing to resume


def test_rerun_resumes_from_the_previous_whole_checkpoint(trained_run, capsys):
    """The issue's case: killed after the step-2 save, which was cut short; the rerun resumes from step 1."""
    run = shutil.copytree(trained_run, output_dir() / "sft_alpaca" / "resume")
    (run / "run_complete.json").unlink()  # killed before its end
    cut(run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    metrics = sft_alpaca.run(sft_alpaca.Params(**TINY, run_name="resume"))["metrics"]
    assert metrics["resumed_from"].endswith("checkpoint-1")
    assert metrics["global_step"] == 2 and metrics["steps_trained"] == 1
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint" in out and "checkpoint-2: adapter_model.safetensors is cut short" in out
    assert checkpoint_problem(run / "checkpoints" / "checkpoint-2") is None  # step 2 saved again, whole

    # none whole: one line naming the folder and the way out, no traceback; overwrite: true starts again
    (run / "run_complete.json").unlink()
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "optimizer.pt").write_bytes(b"")
    argv = ["--run_name", "resume", *as_cli(TINY)]
    with pytest.raises(SystemExit) as stop:
        sft_alpaca.main(argv)
    message = str(stop.value)
    assert message.startswith("error: no whole checkpoint") and "overwrite: true" in message and "\n" not in message
    fresh = sft_alpaca.run(sft_alpaca.Params(**{**TINY, "max_steps": 1}, run_name="resume", overwrite=True))
    assert fresh["metrics"]["resumed_from"] is None and fresh["metrics"]["global_step"] == 1
    assert read_json(run / "params.json")["overwrite"] is True
