"""CUDA-only paths, for `make test-gpu` (`pytest -m gpu`) on a GPU box; the default run deselects them.

Nothing here downloads: models are the real Qwen2.5-0.5B shape with random weights,
saved to tmp_path (benchmarks/common.py), with the embedded SmolLM2 tokenizer.
Needs requirements-gpu.txt (unsloth, bitsandbytes; vllm for the vLLM rollout case).
Each test runs in a fresh Python process of its own (tests/gpu_isolation.py): Unsloth's
patching of transformers from one test can never reach another (an hf-backend test after
an Unsloth one used to fail with a logits batch-size mismatch).
"""

import json
import math

import pytest
import torch

pytestmark = pytest.mark.gpu

SMALL = "qwen2.5-0.5b"
TINY_RUN = dict(max_rows=40, heldout_rows=2, max_steps=3, batch_size=4, lora_r=8, lora_alpha=16, max_new_tokens=4,
                max_seq_length=256, save_steps=100, report_to="none")


@pytest.fixture
def random_small_model(tmp_path, monkeypatch, embedded_model_dir):
    """Qwen2.5-0.5B's shape, random bf16 weights, in tmp_path (LAB_MODELS_DIR points there)."""
    from benchmarks.common import build_random_model

    monkeypatch.setenv("LAB_MODELS_DIR", str(tmp_path / "models"))
    return build_random_model(SMALL, tokenizer_source=embedded_model_dir)


def test_lab_unsloth_sft_trains_and_saves_an_adapter(random_small_model):
    from lab_utils.core.artifacts import read_json
    from scripts import sft_alpaca

    result = sft_alpaca.run(sft_alpaca.Params(**TINY_RUN, model=random_small_model, backend="unsloth",
                                              batching="padded", gradient_checkpointing=True, run_name="unsloth"))
    metrics = result["metrics"]
    assert metrics["backend"] == "unsloth" and metrics["device"] == "cuda"
    assert metrics["global_step"] == 3 and math.isfinite(metrics["train_loss"])
    run = result["run_dir"]
    assert read_json(f"{run}/adapter/adapter_config.json")["r"] == 8


def test_hf_backend_is_refused_once_unsloth_patched_the_process():
    # this test has its own process (tests/gpu_isolation.py), so importing unsloth here harms no other test
    from lab_utils.core.backend import UnslothAlreadyImported, get_backend, import_unsloth

    import_unsloth()
    with pytest.raises(UnslothAlreadyImported, match="restart the kernel/process to use backend=hf"):
        get_backend("hf")
    assert get_backend("unsloth").is_unsloth


def test_hf_backend_qlora_loads_4bit_and_trains(random_small_model, tmp_path):
    import bitsandbytes as bnb
    from datasets import Dataset

    from benchmarks.common import fixed_length_rows
    from lab_utils.training.trainer import make_trainer
    from scripts import sft_alpaca

    p = sft_alpaca.Params(**TINY_RUN, model=random_small_model, backend="hf", load_in_4bit=True,
                          gradient_checkpointing=True)
    lm = sft_alpaca.load_model(p)
    model, tokenizer, backend = lm.model, lm.tokenizer, lm.backend
    assert backend.name == "hf" and any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    # no fp32 upcast of the frozen non-quantised weights (peft's prepare_model_for_kbit_training did that)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert all(w.dtype == torch.float32 for n, w in model.named_parameters() if w.requires_grad)
    lora_b = {n: w.detach().clone() for n, w in model.named_parameters() if "lora_B" in n}
    rows = Dataset.from_list(fixed_length_rows(tokenizer, 12, 128))
    trainer, _ = make_trainer(p, model, tokenizer, rows, None, tmp_path, backend)
    result = trainer.train()
    assert result.global_step == 3 and math.isfinite(result.training_loss)
    moved = [n for n, w in model.named_parameters() if "lora_B" in n and not torch.equal(w, lora_b[n])]
    assert moved, "the LoRA adapters on the 4-bit base trained"


def bench(module, argv, tmp_path, embedded_model_dir) -> dict:
    import importlib

    result = importlib.import_module(module).main([*argv, "--tokenizer", embedded_model_dir, "--out", str(tmp_path)])
    assert json.loads(next(tmp_path.glob(f"{module.split('.')[-1]}-*.json")).read_text())["rows"] == result["rows"]
    return {(r.get("backend") or r.get("engine"), r.get("quant")): r for r in result["rows"]}


def test_sft_benchmark_short_gpu_run(tmp_path, monkeypatch, embedded_model_dir):
    monkeypatch.setenv("LAB_MODELS_DIR", str(tmp_path / "models"))
    rows = bench("benchmarks.sft_throughput", ["--sweep", "--models", SMALL, "--seq_len", "256", "--batch_size", "2",
                                               "--steps", "4", "--warmup_steps", "1"], tmp_path, embedded_model_dir)
    for key in [("lab-hf", "lora16"), ("lab-hf", "qlora4"), ("lab-unsloth", "lora16"), ("lab-unsloth", "qlora4")]:
        assert rows[key]["status"] == "ok", (key, rows[key]["status"])
        assert rows[key]["tokens_per_s"] > 0 and rows[key]["peak_gib"] > 0
    assert rows[("lab-hf", "qlora4")]["peak_gib"] < rows[("lab-hf", "lora16")]["peak_gib"]  # 4-bit weights are smaller


def test_rollout_benchmark_short_gpu_run(tmp_path, monkeypatch, embedded_model_dir):
    from lab_utils.core.backend import has_package

    monkeypatch.setenv("LAB_MODELS_DIR", str(tmp_path / "models"))
    rows = bench("benchmarks.grpo_rollout", ["--models", SMALL, "--prompts", "4", "--group_sizes", "4",
                                             "--new_tokens", "32"], tmp_path, embedded_model_dir)
    assert rows[("hf", None)]["status"] == "ok" and rows[("hf", None)]["tokens"] == 4 * 4 * 32
    if has_package("vllm"):
        assert rows[("vllm", None)]["status"] == "ok" and rows[("vllm", None)]["tokens"] == 4 * 4 * 32
    else:
        assert rows[("vllm", None)]["status"] == "skipped: vllm not installed"


def test_max_context_benchmark_short_gpu_run(tmp_path, monkeypatch, embedded_model_dir):
    monkeypatch.setenv("LAB_MODELS_DIR", str(tmp_path / "models"))
    rows = bench("benchmarks.max_context", ["--model", SMALL, "--start", "1024", "--max_length", "8192",
                                            "--resolution", "1024"], tmp_path, embedded_model_dir)
    for backend in ("hf", "lab-hf", "lab-unsloth"):
        row = rows[(backend, "lora16")]
        assert row["status"] == "ok" and row["max_length"] >= 1024 and row["peak_gib_at_max"] > 0
