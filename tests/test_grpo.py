"""GRPO on GSM8K end to end on the embedded model: rewards logged, adapter saved, CLI, papermill, vLLM (GPU)."""

import json
import sys

import pytest
import yaml

from lab_utils.core.artifacts import read_json
from lab_utils.core.backend import Backend, has_package, vllm_available
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute
from lab_utils.core.paths import output_dir
from tests.helpers import TINY_LM
from lab_utils.training.rollouts import choose_rollouts
from scripts import grpo_gsm8k

# 2 steps of 1 prompt x 2 completions x 16 tokens after a 1-step warm-up; 2 problems graded before and after,
# on the tiny random Llama with the real SmolLM2 tokenizer (conftest's tiny_lm_dir): these tests prove the
# mechanics (TRL's settings, rewards, checkpoints, the notebooks), the learning test below uses the real model.
# HF generate on purpose (auto would pick vLLM where it is installed): tests/test_vllm.py runs the vLLM path.
TINY = dict(model=TINY_LM, max_rows=12, heldout_rows=2, num_generations=2, batch_size=2,
            max_completion_length=16, max_new_tokens=16, max_steps=2, save_steps=1, lora_r=4, lora_alpha=8,
            report_to="none", sft_warmup_steps=1, sft_warmup_batch_size=2, rollouts="hf")

# The CPU demo shortened (fewer held-out problems, warm-up and GRPO steps), fp32 on every CPU (bf16 autocast
# where a CPU has it would change the rounding), seeded: the policy must *learn*, not just run.
# Its warm-up is as strong as the demo's (16 steps at 8e-4 ~ 24 at 5e-4: the same sum of learning rates), in less time.
# rollouts auto: vLLM samples and grades where it is installed (CI), HF generate elsewhere; the learning is the
# trainer's either way, and both samplers are proven by the tiny runs here and in tests/test_vllm.py.
LEARNING = dict(heldout_rows=8, sft_warmup_steps=16, sft_warmup_learning_rate=8e-4, max_steps=8, save_steps=8,
                report_to="none", precision="fp32", run_name="learns", rollouts="auto")
REWARDS = ["correctness", "soft_format", "xml_count", "overlong_penalty"]


def test_rollouts_are_vllm_where_installed_else_hf_generate():
    cpu = Backend("hf", "test", "cpu")
    assert choose_rollouts("auto", cpu).engine == ("vllm" if vllm_available() else "hf")
    assert choose_rollouts("hf", cpu).engine == "hf"
    if not vllm_available():
        with pytest.raises(RuntimeError, match="make setup-vllm"):
            choose_rollouts("vllm", cpu)
    with pytest.raises(ValueError, match="auto, vllm or hf"):
        choose_rollouts("sglang", cpu)


@pytest.mark.parametrize("change, message", [
    (dict(reward_weights=[1.0]), "reward_weights"),
    (dict(num_generations=1), "at least 2"),
    (dict(num_generations=4, batch_size=2), "multiple of num_generations"),
    (dict(prompt_language="fr"), "prompt_language"),
    (dict(loss_type="ppo"), "loss_type='ppo': expected one of grpo, bnpo, dr_grpo, dapo"),
    (dict(importance_sampling_level="batch"), "importance_sampling_level='batch'"),
    (dict(scale_rewards="std"), "scale_rewards='std': expected one of group, batch, none"),
])
def test_bad_params_fail_before_any_model_loads(change, message):
    with pytest.raises(ValueError, match=message):
        grpo_gsm8k.check_params(grpo_gsm8k.Params(**{**TINY, "reward_names": REWARDS,
                                                     "reward_weights": [2.0, 0.5, 0.5, 1.0], **change}))


def test_unknown_loss_type_stops_in_one_line_before_the_run_folder():
    with pytest.raises(SystemExit, match=r"^error: loss_type='ppo': expected one of grpo, bnpo, dr_grpo, dapo"):
        grpo_gsm8k.main(["--loss_type", "ppo", "--run_name", "bad-loss"])
    assert not (output_dir() / "grpo_gsm8k").exists()


# (loss_type, importance_sampling_level, scale_rewards): the batch's variants and bnpo
VARIANTS = [("dapo", "token", "group"), ("grpo", "token", "group"), ("bnpo", "token", "batch"),
            ("dr_grpo", "token", "none"), ("grpo", "sequence", "group")]


@pytest.fixture(scope="module")
def grpo_model():
    """One LoRA model for the variant tests: each trains 2 GRPO steps on it (the weights need not be fresh)."""
    return grpo_gsm8k.load_model(grpo_gsm8k.Params(**TINY))


@pytest.mark.parametrize("loss_type, level, scale", VARIANTS, ids=["-".join(v) for v in VARIANTS])
def test_each_loss_variant_trains_and_reaches_trl(grpo_model, loss_type, level, scale):
    """2 GRPO steps (1 prompt x 2 completions x 16 tokens) per variant; TRL's saved config holds the variant."""
    import torch

    p = grpo_gsm8k.Params(**{**TINY, "sft_warmup_steps": 0}, loss_type=loss_type, importance_sampling_level=level,
                          scale_rewards=scale, run_name=f"{loss_type}-{level}")
    data = grpo_gsm8k.build_dataset(p, grpo_gsm8k.load_data(p))
    run = grpo_gsm8k.setup_run(p)
    outcome = grpo_gsm8k.train(p, grpo_model, data, run)
    assert [r["step"] for r in outcome["history"] if "reward" in r] == [1, 2]
    args = torch.load(run / "checkpoints" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert (args.loss_type, args.importance_sampling_level, args.scale_rewards) == (loss_type, level, scale)
    assert read_json(run / "params.json")["loss_type"] == loss_type


@pytest.mark.notebook
def test_variant_runs_then_the_lesson_compares_them(tmp_path):
    """Dr. GRPO and GSPO end to end on CPU (tiny), then the teach_grpo_variants notebook reads and plots both."""
    for name, change in (("dr_grpo", dict(loss_type="dr_grpo", scale_rewards="none")),
                         ("gspo", dict(loss_type="grpo", importance_sampling_level="sequence"))):
        metrics = grpo_gsm8k.run(grpo_gsm8k.Params(**TINY, **change, run_name=name))["metrics"]
        graded = metrics["format_rate_after"] * TINY["heldout_rows"]  # a share of the 2 graded answers
        assert metrics["global_step"] == 2 and graded == pytest.approx(round(graded))
    out = tmp_path / "lesson.ipynb"
    execute(NOTEBOOKS_DIR / "teach_grpo_variants.ipynb", out, {"runs_dir": "", "run_name": "lesson"})
    lesson = output_dir() / "teach_grpo_variants" / "lesson"
    table = (lesson / "variants.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in table[1:]] == ["dr_grpo", "gspo"]
    assert "dr_grpo, token ratios, std over none" in table[1] and "grpo, sequence ratios" in table[2]
    assert (lesson / "rewards.png").exists() and (lesson / "format_rates.png").exists()
    images = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the reward curves and the format rates are shown"


def test_lesson_without_runs_is_one_line():
    from scripts import teach_grpo_variants

    with pytest.raises(SystemExit, match=r"^error: no finished grpo_gsm8k runs under .*scripts.batch"):
        teach_grpo_variants.main(["--runs_dir", "nothing-here"])
    assert not (output_dir() / "teach_grpo_variants").exists()


def test_cpu_run_logs_each_reward_saves_adapter_and_lists_skipped_prompts(tmp_path):
    # max_prompt_length 100 drops the sample's longest questions: they must be listed, not lost
    imported = "unsloth" in sys.modules  # by an earlier test of this session
    # beta > 0 (the demo's default is 0): the KL term is logged and TRL's reference adapter must not be saved
    p = grpo_gsm8k.Params(**TINY, reward_names=REWARDS, reward_weights=[2.0, 0.5, 0.5, 1.0], max_prompt_length=100,
                          beta=0.04, run_name="cpu")
    result = grpo_gsm8k.run(p)
    run = output_dir() / "grpo_gsm8k" / "cpu"
    history = read_json(run / "history.json")
    steps = [r for r in history if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    names = ["correctness_reward", "soft_format_reward", "xml_count_reward", "overlong_penalty"]
    for record in steps:
        for name in names:
            assert f"rewards/{name}/mean" in record, name
        assert "kl" in record and "completions/mean_length" in record
        assert record["rewards/overlong_penalty/mean"] <= 0.0  # 16 tokens of a reasoning answer: cut off
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "params.json", "metrics.json",
                 "rewards.png", "dynamics.png", "samples.md", "samples.csv", "skipped_rows.csv",
                 "run_complete.json", "checkpoints/checkpoint-2"):
        assert (run / name).exists(), name
    assert not (run / "adapter" / "ref").exists()  # TRL's KL-reference copy is not part of the result
    metrics = result["metrics"]
    assert metrics["global_step"] == 2 and metrics["rollouts"] == "hf" and metrics["seconds_per_step"] > 0
    samples = result["samples"]  # the headline scores are the shares of the graded answers shown in samples.csv
    assert metrics["accuracy_before"] == pytest.approx(samples["before_correct"].mean(), abs=1e-4)
    assert metrics["accuracy_after"] == pytest.approx(samples["after_correct"].mean(), abs=1e-4)
    for key in ("tagged_accuracy_after", "format_rate_after", "format_rate_after_warmup"):
        assert metrics[key] * len(samples) == pytest.approx(round(metrics[key] * len(samples)), abs=1e-3), key
    assert metrics["sft_warmup_steps"] == 1 and (run / "sft_warmup" / "checkpoints" / "checkpoint-1").exists()
    skipped = (run / "skipped_rows.csv").read_text().splitlines()
    assert metrics["rows_skipped"] == len(skipped) - 1 > 0 and "prompt too long" in skipped[1]
    assert len(result["samples"]) == 2 and set(result["samples"]["before_correct"]) <= {0.0, 1.0}
    # an HF-rollout CPU run never imports unsloth (its import patches transformers for the whole process);
    # vllm it may: TRL's trl.generation imports it whenever it is installed
    assert ("unsloth" in sys.modules) == imported


@pytest.mark.learning
def test_warm_up_then_grpo_teach_the_format_and_raise_the_reward():
    metrics = grpo_gsm8k.run(grpo_gsm8k.Params(**LEARNING))["metrics"]
    assert metrics["rollouts"] == ("vllm" if has_package("vllm") else "hf")
    # the base model never writes the layout; after warm-up + GRPO most greedy answers do (margins leave
    # room for another CPU's rounding: each is several problems away from the value measured)
    assert metrics["format_rate_before"] <= 0.125
    assert metrics["format_rate_after"] >= 0.5
    assert metrics["sft_warmup_steps"] == 16 and metrics["steps_trained"] == 8
    assert metrics["sft_warmup_loss_last"] < metrics["sft_warmup_loss_first"]
    # and GRPO itself learns: its sampled completions earn more at the end than at the start
    assert metrics["reward_last_quarter"] > metrics["reward_first_quarter"]


def test_cli_with_config_and_override_then_resume(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "max_steps": 1}))
    grpo_gsm8k.main(["--config", str(config), "--run_name", "cli", "--reward_names", "[soft_format, xml_count]",
                     "--reward_weights", "[1.0, 0.5]"])
    run = output_dir() / "grpo_gsm8k" / "cli"
    params = read_json(run / "params.json")
    assert params["reward_names"] == ["soft_format", "xml_count"] and params["num_generations"] == 2
    assert "accuracy" in capsys.readouterr().out
    (run / "run_complete.json").unlink()  # as if interrupted: the next run resumes from checkpoint-1
    grpo_gsm8k.main(["--config", str(config), "--run_name", "cli", "--reward_names", "[soft_format, xml_count]",
                     "--reward_weights", "[1.0, 0.5]", "--max_steps", "2"])
    metrics = read_json(run / "metrics.json")
    assert metrics["resumed_from"].endswith("checkpoint-1") and metrics["global_step"] == 2
    assert metrics["steps_trained"] == 1
    assert metrics["sft_warmup_steps"] == 0  # the GRPO checkpoint already holds the warmed-up adapter


@pytest.mark.notebook
def test_notebook_runs_under_papermill(tmp_path):
    out = tmp_path / "executed.ipynb"
    execute(NOTEBOOKS_DIR / "grpo_gsm8k.ipynb", out, {**TINY, "max_steps": 1, "run_name": "nb"})
    run = output_dir() / "grpo_gsm8k" / "nb"
    assert (run / "run_complete.json").exists()
    executed = json.loads(out.read_text())
    images = [o for c in executed["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the reward curves and the length/KL plots are shown"
    assert read_json(run / "metrics.json")["global_step"] == 1


@pytest.mark.gpu
def test_vllm_rollouts_train_and_log_rewards(tmp_path):
    """The GPU path for real: vLLM writes the rollouts (through unsloth's fast_inference when installed,
    else the lab's engine through rollout_func), the rewards are logged per step, and the adapter is saved."""
    if not vllm_available():
        pytest.skip("needs vllm (make setup-vllm)")
    p = grpo_gsm8k.Params(**{**TINY, "model": "smollm2-135m", "max_completion_length": 64, "batch_size": 4,
                             "num_generations": 4, "rollouts": "vllm"},
                          vllm_gpu_memory_utilization=0.3, max_seq_length=512, run_name="vllm")
    metrics = grpo_gsm8k.run(p)["metrics"]
    assert metrics["rollouts"] == "vllm" and metrics["device"] == "cuda" and metrics["global_step"] == 2
    history = read_json(output_dir() / "grpo_gsm8k" / "vllm" / "history.json")
    assert all(f"rewards/{n}/mean" in r for r in history if "reward" in r for n in ("correctness_reward",))
    assert (output_dir() / "grpo_gsm8k" / "vllm" / "adapter" / "adapter_model.safetensors").exists()
