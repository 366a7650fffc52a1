"""Scale-out without launching ranks: launches that cannot work stop in one line before a run folder exists,
and the DeepSpeed configs pass DeepSpeed's own parser as the Trainer would hand them over.
(The launched runs, DDP / FSDP2 / two nodes, are in tests/test_ddp.py.)"""

from pathlib import Path

import pytest

from lab_utils.core.distributed import scale_out_refusal

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("engine", ["fsdp", "zero3"])
def test_unsloth_and_quantised_weights_are_refused_where_weights_are_sharded(engine):
    assert "LAB_BACKEND=hf" in scale_out_refusal(engine, "unsloth")
    assert "4-bit QLoRA cannot be sharded" in scale_out_refusal(engine, "hf", load_in_4bit=True)
    assert "8-bit QLoRA cannot be sharded" in scale_out_refusal(engine, "hf", load_in_8bit=True)
    assert scale_out_refusal(engine, "hf") is None  # 16-bit LoRA on transformers + peft shards


def test_grpo_under_fsdp_is_refused_with_what_to_use_instead():
    assert "configs/accelerate/ddp.yaml" in scale_out_refusal("fsdp", "hf", experiment="grpo_gsm8k")
    assert scale_out_refusal("ddp", "hf", experiment="grpo_gsm8k") is None
    assert scale_out_refusal("fsdp", "hf", experiment="sft_alpaca") is None


@pytest.mark.parametrize("engine", ["single", "ddp", "zero2"])
def test_replicated_weights_take_unsloth_and_qlora(engine):
    assert scale_out_refusal(engine, "unsloth", load_in_4bit=True) is None


@pytest.mark.parametrize("launcher_env, expected", [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "4-bit QLoRA cannot be sharded by FSDP"),
    # what `accelerate launch --cpu --num_processes 2` leaves a process: one process, no FSDP settings
    ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "starts ONE process"),
])
def test_a_launch_that_cannot_work_stops_in_one_line_before_the_run_folder(launcher_env, expected, monkeypatch,
                                                                          tmp_path, capsys):
    from scripts import sft_alpaca

    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in launcher_env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as stop:
        sft_alpaca.main(["--config", "configs/sft_alpaca.yaml", "--load_in_4bit", "true", "--max_rows", "12"])
    message = str(stop.value)
    assert expected in message and "\n" not in message
    assert not list(tmp_path.iterdir())  # refused before the run folder


def deepspeed_config_as_the_trainer_builds_it(name: str, **training_args):
    """configs/accelerate/<name>.yaml -> accelerate's DeepSpeedPlugin -> transformers fills its "auto" values from
    TrainingArguments -> DeepSpeed's own DeepSpeedConfig (raises on anything DeepSpeed would refuse)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    launch = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
    settings = {k: v for k, v in launch.deepspeed_config.items() if k != "deepspeed_multinode_launcher"}
    plugin = DeepSpeedPlugin(**settings)
    plugin.set_mixed_precision(launch.mixed_precision)
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[], bf16=True, **training_args)
    filled = HfTrainerDeepSpeedConfig(plugin.deepspeed_config)
    filled.trainer_config_process(args)
    filled.trainer_config_finalize(args, None, num_training_steps=100)
    return DeepSpeedConfig(filled.config)


@pytest.mark.parametrize("name, stage", [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_configs_pass_deepspeeds_own_parser(name, stage):
    pytest.importorskip("deepspeed", reason="pip install -r requirements-deepspeed.txt")
    config = deepspeed_config_as_the_trainer_builds_it(name, per_device_train_batch_size=2)
    assert config.zero_optimization_stage == stage
    assert config.bfloat16_config.enabled and config.train_micro_batch_size_per_gpu == 2
    if stage == 3:
        assert config.zero_config.gather_16bit_weights_on_model_save  # the saved adapter is a normal folder


def test_deepspeed_config_must_agree_with_the_scripts_gradient_accumulation():
    pytest.importorskip("deepspeed", reason="pip install -r requirements-deepspeed.txt")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        deepspeed_config_as_the_trainer_builds_it("deepspeed_zero2", gradient_accumulation_steps=4)
