"""Shared pieces of the GPU benchmarks: real model shapes with random weights, rows, isolation, the table.

Models. A GPU box may have no network, and a speed or memory number does not depend
on what the weights have learned, so the benchmarks build each model from the
published shape of its config.json (hidden size, layers, heads, kv heads, MLP
width, vocabulary, RoPE base, tied embeddings) with random weights, save it once
under $LAB_MODELS_DIR/bench-random/<name>/, and load it from that folder like any
checkpoint: both backends read the same files.

Tokenizer. Every model gets the embedded SmolLM2 tokenizer (49,152 ids) or the one
given with --tokenizer. The embedding keeps the model's *real* vocabulary size
(151,936 for Qwen2.5-0.5B), because the embedding and the output projection are a
large share of the memory and time being measured; the tokenizer's ids are all
below it, so no id needs mapping and the extra rows are simply never looked up.

Isolation. Unsloth patches transformers and TRL when it is imported, and peak
memory is per process, so every measured case runs in its own Python process
(`run_isolated`) and returns one JSON line.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lab_utils.models import resolve_model, save_model_folder
from lab_utils.paths import models_dir

# Shapes from the published config.json files (Hugging Face, 2024-09 releases).
MODEL_CONFIGS = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, rope_theta=1000000.0,
                         tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, vocab_size=151936, rope_theta=1000000.0,
                         tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, intermediate_size=18944, vocab_size=152064, rope_theta=1000000.0,
                       tie_word_embeddings=False, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "llama3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                        rope_theta=500000.0, tie_word_embeddings=True, max_position_embeddings=131072,
                        rms_norm_eps=1e-5,
                        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    # --smoke: a 2-layer Llama with the same code path, small enough for a CPU test
    "smoke-llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=128, vocab_size=49152, rope_theta=10000.0,
                        tie_word_embeddings=True, max_position_embeddings=2048, rms_norm_eps=1e-5),
}
GPU_MODELS = ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "llama3.2-1b"]
SMOKE_MODEL = "smoke-llama"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- environment

def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def has_package(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------- random models from real shapes

def random_model_dir(name: str) -> Path:
    return models_dir() / "bench-random" / name


def model_config(name: str, **special_token_ids):
    """A transformers config with `name`'s published shape."""
    from transformers import AutoConfig

    shape = dict(MODEL_CONFIGS[name])
    return AutoConfig.for_model(shape.pop("model_type"), **shape, **special_token_ids)


def build_random_model(name: str, tokenizer_source: str | None = None, seed: int = 0) -> str:
    """Save `name`'s shape with random bf16 weights (fp32 for the smoke model) once; return the folder."""
    target = random_model_dir(name)
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM

    from lab_utils.models import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_source or resolve_model("smollm2-135m"))
    if len(tokenizer) > MODEL_CONFIGS[name]["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids but {name} only {MODEL_CONFIGS[name]['vocab_size']}")
    config = model_config(name, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    smoke = name == SMOKE_MODEL
    torch.manual_seed(seed)
    # initialise on the GPU: a 7B model's random init takes minutes on a CPU
    with torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if smoke else torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return str(save_model_folder(model, tokenizer, target))


def ensure_random_model(name: str, tokenizer_source: str | None = None) -> str:
    """The model folder, built in a child process (keeps this process free of a CUDA context)."""
    target = random_model_dir(name)
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return str(target)
    result = run_isolated("benchmarks.common", "build_random_model", {"name": name, "tokenizer_source": tokenizer_source})
    if result["status"] != "ok":
        raise RuntimeError(f"building the random {name} failed: {result['status']}")
    return result["value"]


# ---------------------------------------------------------------- data

def fixed_length_rows(tokenizer, n_rows: int, seq_len: int, data_file: str = "alpaca_sample.jsonl") -> list[dict]:
    """n_rows rows of exactly seq_len tokens: chat-formatted conversations laid end to end.

    Equal lengths mean every backend trains exactly batch x seq_len tokens a step
    (no padding to disagree about), so tokens/s compare like for like. Labels are
    the assistant tokens, as in real SFT.
    """
    from data_loaders.alpaca import load_chat_file
    from lab_utils.chat import tokenize_conversation

    dataset, _ = load_chat_file(data_file)
    conversations = [tokenize_conversation(tokenizer, m, max_length=seq_len) for m in dataset["messages"]]
    stream_ids, stream_labels, rows, i = [], [], [], 0
    while len(rows) < n_rows:
        conversation = conversations[i % len(conversations)]
        stream_ids += conversation["input_ids"]
        stream_labels += conversation["labels"]
        i += 1
        while len(stream_ids) >= seq_len and len(rows) < n_rows:
            rows.append({"input_ids": stream_ids[:seq_len], "labels": stream_labels[:seq_len]})
            stream_ids, stream_labels = stream_ids[seq_len:], stream_labels[seq_len:]
    return rows


# ---------------------------------------------------------------- timing + memory

def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, in GiB (None on CPU)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def steady_rate(step_times: list[float], tokens_per_step: int, warmup_steps: int) -> float | None:
    """Tokens per second over the steps after the warm-up ones (compilation, allocator growth)."""
    measured = step_times[warmup_steps:]
    if len(measured) < 2:
        return None
    return round(tokens_per_step * (len(measured) - 1) / (measured[-1] - measured[0]), 1)


# ---------------------------------------------------------------- one case per process

def run_isolated(module: str, function: str, payload: dict, timeout: int = 3600) -> dict:
    """Call module.function(**payload) in a fresh Python; {"status": "ok", "value": ...} or the error."""
    command = [sys.executable, "-m", "benchmarks.common", "--worker", module, function, json.dumps(payload)]
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timed out after {timeout} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return {"status": "ok", "value": json.loads(line[len("RESULT "):]), "seconds": round(time.time() - started, 1)}
    tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
    if "OutOfMemoryError" in done.stderr:
        tail = "CUDA out of memory"
    return {"status": f"failed: {tail[:200]}", "stderr_tail": done.stderr[-2000:]}


def worker_main(argv: list[str]) -> None:
    import importlib

    module, function, payload = argv
    value = getattr(importlib.import_module(module), function)(**json.loads(payload))
    print("RESULT " + json.dumps(value), flush=True)


# ---------------------------------------------------------------- reporting

def skip_reasons(needs: list[str]) -> str | None:
    """Why a case cannot run here ("no CUDA GPU", "unsloth not installed", ...), or None."""
    reasons = []
    if "cuda" in needs and not cuda_available():
        reasons.append("no CUDA GPU")
    for package in ("unsloth", "vllm", "bitsandbytes", "trl"):
        if package in needs and not has_package(package):
            reasons.append(f"{package} not installed")
    return "; ".join(reasons) or None


def ratio(value, base) -> float | None:
    return round(value / base, 2) if value and base else None


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    import pandas as pd

    # "-" for what a row lacks (a skipped case); built per cell so whole numbers stay whole
    frame = pd.DataFrame([{c: "-" if r.get(c) is None else r[c] for c in columns} for r in rows], columns=columns)
    print(f"\n== {title} ==")
    print(frame.to_markdown(index=False))


def write_results(name: str, payload: dict, out: str | None) -> Path | None:
    """benchmarks/results/<name>-<time>.json when --out is given ("" = the default folder)."""
    if out is None:
        return None
    folder = Path(out) if out else RESULTS_DIR
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    from lab_utils.artifacts import write_json

    write_json(payload, path)
    print(f"[bench] wrote {path}")
    return path


def environment() -> dict:
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for package in ("peft", "trl", "unsloth", "vllm", "bitsandbytes"):
        if has_package(package):
            from importlib.metadata import PackageNotFoundError, version

            try:
                versions[package] = version(package)
            except PackageNotFoundError:
                pass
    return {"device": gpu_name(), "versions": versions, "python": sys.version.split()[0]}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[2:])
