"""The GPU benchmarks' harness on CPU: shapes of the real configs, the length search, each --smoke run.

The smoke runs call each benchmark's main() with the arguments of `python -m benchmarks.x --smoke --out DIR`,
in this process (on a CPU the benchmarks run their cases in process too): they must train/generate through
the hf path, print the table, write the JSON, and say why each GPU-only case was skipped.
"""

import importlib
import json
import math

import pytest
import torch

from benchmarks.common import GPU_MODELS, model_config
from benchmarks.max_context import longest_fitting


# total parameters of the published checkpoints (tied embeddings counted once)
PUBLISHED_PARAMETERS = {"qwen2.5-0.5b": 494_032_768, "qwen2.5-1.5b": 1_543_714_304, "qwen2.5-7b": 7_615_616_512,
                        "llama3.2-1b": 1_235_814_400}


@pytest.mark.parametrize("name", GPU_MODELS)
def test_config_shapes_give_the_published_parameter_counts(name):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(model_config(name))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]


def test_length_search_doubles_then_bisects_to_the_resolution():
    limit = 5000
    longest, tries = longest_fitting(lambda n: n <= limit, start=512, cap=65536, resolution=64)
    assert limit - 64 < longest <= limit
    assert [n for n, _ in tries[:5]] == [512, 1024, 2048, 4096, 8192]  # doubling until the first failure
    assert all(ok == (n <= limit) for n, ok in tries)


def test_length_search_stops_at_the_cap_and_at_a_failing_start():
    assert longest_fitting(lambda n: True, start=100, cap=1000, resolution=10) == (
        1000,
        [(100, True), (200, True), (400, True), (800, True), (1000, True)],
    )
    assert longest_fitting(lambda n: False, start=100, cap=1000, resolution=10) == (0, [(100, False)])


def run_smoke(module: str, tmp_path, capsys, *args) -> tuple[str, dict]:
    """`python -m <module> ... --smoke --out DIR`, called in this process (on a CPU each case runs in process
    too: benchmarks.common.run_case); what it printed and the JSON it wrote."""
    importlib.import_module(module).main([*args, "--smoke", "--out", str(tmp_path)])
    written = list(tmp_path.glob(f"{module.split('.')[-1]}-*.json"))
    assert len(written) == 1
    return capsys.readouterr().out, json.loads(written[0].read_text())


def by(rows, **match):
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU run skips")
def test_sft_smoke_trains_trl_and_lab_hf_and_skips_the_gpu_cases(tmp_path, capsys):
    out, result = run_smoke("benchmarks.sft_throughput", tmp_path, capsys, "--sweep")
    assert "== LoRA SFT" in out and "| smoke-llama | lora16  | trl" in out
    rows = result["rows"]
    for backend in ("trl", "lab-hf"):
        (row,) = by(rows, quant="lora16", backend=backend)
        assert row["status"] == "ok" and row["tokens_per_s"] > 0 and row["steps"] == 4
        assert math.isfinite(row["final_loss"]) and row["peak_gib"] is None  # no CUDA: no peak memory
    assert by(rows, backend="trl", quant="lora16")[0]["speed_vs_trl"] == 1.0
    (unsloth,) = by(rows, quant="lora16", backend="lab-unsloth")
    assert unsloth["status"].startswith("skipped:") and "no CUDA GPU" in unsloth["status"]
    assert all(r["status"].startswith("skipped:") for r in by(rows, quant="qlora4"))
    assert result["settings"]["seq_len"] == 64 and result["environment"]["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU run skips")
def test_rollout_smoke_times_hf_and_vllm_with_the_adapter_and_skips_unsloth(tmp_path, capsys):
    from benchmarks import grpo_rollout
    from lab_utils.core.backend import has_package

    result = grpo_rollout.main(["--smoke", "--out", str(tmp_path)])  # in this process: CPU cases run in process
    out = capsys.readouterr().out
    assert "== GRPO rollouts" in out and "LoRA r=8" in out
    assert json.loads(next(tmp_path.glob("grpo_rollout-*.json")).read_text())["rows"] == result["rows"]
    (hf,) = by(result["rows"], engine="hf")
    assert hf["status"] == "ok" and hf["tokens"] == 1 * 2 * 8 and hf["tokens_per_s"] > 0  # prompts x group x tokens
    (vllm,) = by(result["rows"], engine="vllm")
    if has_package("vllm"):
        assert vllm["status"] == "ok" and vllm["tokens"] == hf["tokens"] and vllm["start_s"] > 0
        assert vllm["speed_vs_hf"] > 0 and "vllm / HF generate" in out
    else:
        assert vllm["status"] == "skipped: vllm not installed"
    (unsloth,) = by(result["rows"], engine="unsloth-vllm")
    assert unsloth["status"].startswith("skipped:") and "no CUDA GPU" in unsloth["status"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU run skips")
def test_max_context_smoke_searches_to_the_cap_on_both_hf_paths(tmp_path, capsys):
    out, result = run_smoke("benchmarks.max_context", tmp_path, capsys)
    assert "== Longest trainable sequence" in out and "| 256 " in out
    for backend in ("hf", "lab-hf"):
        (row,) = by(result["rows"], backend=backend)
        assert row["status"] == "ok" and row["max_length"] == 256 and row["reached_cap"] is True
        assert [n for n, _ in row["try_log"]] == [32, 64, 128, 256]
    (unsloth,) = by(result["rows"], backend="lab-unsloth")
    assert unsloth["status"].startswith("skipped:")


def test_vision_shape_gives_the_published_parameter_count():
    # unsloth/Qwen2.5-VL-3B-Instruct: 3,754,622,976 parameters (tied embeddings counted once)
    from transformers import Qwen2_5_VLForConditionalGeneration

    from benchmarks.common import vision_model_config
    from lab_utils.vision.model import tiny_vision_tokenizer

    config = vision_model_config("qwen2.5-vl-3b", tiny_vision_tokenizer())
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU run skips")
def test_sft_smoke_at_natural_lengths_counts_real_tokens(tmp_path, capsys):
    out, result = run_smoke("benchmarks.sft_throughput", tmp_path, capsys, "--sweep", "--lengths", "natural",
                            "--data_file", "medical/dialogues_gbk.csv", "--backends", "trl", "lab-hf",
                            "--quants", "lora16")
    assert "natural lengths from medical/dialogues_gbk.csv" in out and "mfu_pct" in out
    assert result["settings"]["lengths"] == "natural"
    rows = {r["backend"]: r for r in result["rows"]}
    for backend in ("trl", "lab-hf"):
        row = rows[backend]
        assert row["status"] == "ok" and row["tokens_per_s"] > 0 and math.isfinite(row["final_loss"])
        assert row["mfu_pct"] is None  # no peak FLOPs known for a CPU
    # same rows for both: whole conversations at their own lengths, below the 512-token cap
    assert rows["trl"]["mean_row_tokens"] == rows["lab-hf"]["mean_row_tokens"] < 512
    assert result["settings"]["seq_len"] == 512


def test_natural_rows_keep_each_conversation_whole_and_mfu_uses_the_stated_formula(tokenizer, tmp_path):
    from benchmarks.common import lora_flops_per_token, mfu_percent, natural_length_rows

    rows = natural_length_rows(tokenizer, 10, 4096, "alpaca_sample.jsonl")
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(rows) == 10 and len(set(lengths)) > 3  # natural: unequal lengths
    assert all(r["labels"][0] == -100 and any(t != -100 for t in r["labels"]) for r in rows)  # a prompt, then an answer
    assert rows == natural_length_rows(tokenizer, 10, 4096, "alpaca_sample.jsonl")  # seeded: same rows every backend
    # Qwen2.5-0.5B: 24 layers x (q,k,v,o + gate,up,down) + the 151,936 x 896 head
    from transformers import AutoConfig

    from benchmarks.common import model_config

    folder = tmp_path / "qwen2.5-0.5b-config"
    model_config("qwen2.5-0.5b").save_pretrained(folder)
    d, kv, ff, layers, vocab = 896, 128, 4864, 24, 151936
    n_linear = layers * (d * d + 2 * d * kv + d * d + 3 * d * ff) + vocab * d
    assert AutoConfig.from_pretrained(folder).hidden_size == d
    assert lora_flops_per_token(str(folder), 1000) == 4 * n_linear + 4 * layers * d * 1000
    assert mfu_percent(10_000, 4e9, "NVIDIA H200") == round(100 * 10_000 * 4e9 / 989e12, 1)
    assert mfu_percent(10_000, 4e9, "cpu") is None
