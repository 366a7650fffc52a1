"""The alpaca experiment end to end on the embedded model: CLI, resume, papermill."""

import json
import shutil

import pytest
import yaml

from lab_utils.core.artifacts import read_json
from lab_utils.core.paths import REPO_ROOT, output_dir
from scripts import sft_alpaca
from tests.helpers import TINY_SFT, finished_cli_run, write_config

TINY = {**TINY_SFT, "report_to": "tensorboard"}  # the CLI test reads its tensorboard log



def tiny_config(tmp_path, **extra):
    return write_config(tmp_path, {**TINY, **extra})


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The module's one finished run, trained through the command line (config + an override); the resume test
    continues a copy of it."""
    out = tmp_path_factory.mktemp("alpaca_cli")
    return finished_cli_run(out, sft_alpaca, "sft_alpaca",
                            ["--config", str(tiny_config(out)), "--run_name", "cli", "--lora_r", "2"])


def test_cli_with_config_and_override_writes_every_artifact(cli_run):
    run, printed = cli_run
    params = read_json(run / "params.json")
    assert params["lora_r"] == 2 and params["max_steps"] == 2  # override beats config beats default
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "metrics.json", "history.json",
                 "training.png", "generations.md", "generations.csv", "skipped_rows.csv", "run_complete.json"):
        assert (run / name).exists(), name
    adapter = json.loads((run / "adapter/adapter_config.json").read_text())
    assert adapter["r"] == 2 and set(adapter["target_modules"]) >= {"q_proj", "v_proj", "gate_proj"}
    metrics = read_json(run / "metrics.json")
    assert metrics["global_step"] == 2 and metrics["train_loss"] > 0 and metrics["tokens_seen"] > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "prompt" in printed


def test_resume_continues_the_step_count(cli_run):
    run = shutil.copytree(cli_run[0], output_dir() / "sft_alpaca" / "resume")
    assert (run / "checkpoints" / "checkpoint-2").is_dir()
    (run / "run_complete.json").unlink()  # as if the run had been interrupted before its end
    second = sft_alpaca.run(sft_alpaca.Params(**{**TINY, "max_steps": 4, "lora_r": 2}, run_name="resume"))
    assert second["metrics"]["resumed_from"].endswith("checkpoint-2")
    assert second["metrics"]["global_step"] == 4
    steps = [r["step"] for r in read_json(run / "history.json") if "loss" in r]
    assert steps == [3, 4]  # only the remaining steps were trained


def test_eval_steps_give_an_eval_curve_sample_answers_and_the_best_checkpoint(tmp_path):
    p = sft_alpaca.Params(**{**TINY, "max_steps": 3, "learning_rate": 5e-3}, eval_steps=1, load_best=True,
                          save_total_limit=3, run_name="evals")
    metrics = sft_alpaca.run(p)["metrics"]
    run = output_dir() / "sft_alpaca" / "evals"
    history = read_json(run / "history.json")
    eval_losses = {r["step"]: r["eval_loss"] for r in history if "eval_loss" in r}
    assert {1, 2, 3} <= set(eval_losses)  # one point per eval step, not only before and after
    samples = read_json(run / "samples_during_training.json")
    assert [s["step"] for s in samples][:4] == [0, 1, 2, 3]  # before training, then at every eval step
    assert all(len(s["answers"]) == 2 and all(isinstance(a, str) for a in s["answers"]) for s in samples)
    best_step = min((step for step in (1, 2, 3)), key=lambda step: eval_losses[step])
    assert metrics["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert metrics["eval_loss_after"] == pytest.approx(eval_losses[best_step], rel=1e-4)  # the best one was kept


# The notebook under papermill: tests/test_secrets.py runs it through the batch runner (and tests/test_browser.py in
# JupyterLab, edited by hand).


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["unsloth", "hf"])
def test_gpu_config_trains_with_qlora(backend, monkeypatch):
    """The GPU config's settings (4-bit QLoRA, checkpointing, padded batches) on the embedded model
    (the GPU box has no network, so the config's hub model is swapped for a local one)."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "sft_alpaca_gpu.yaml").read_text())
    params = {**config, **TINY, "model": "smollm2-135m", "run_name": f"gpu-{backend}", "backend": backend}
    metrics = sft_alpaca.run(sft_alpaca.Params(**params))["metrics"]
    assert metrics["backend"] == backend and metrics["device"] == "cuda"
    assert metrics["global_step"] == 2 and metrics["eval_loss_after"] < metrics["eval_loss_before"] + 1.0
