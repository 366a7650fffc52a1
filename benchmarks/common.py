"""Shared pieces of the GPU benchmarks: rows, FLOPs, the table, the results file.

The random-weight models of real shapes (lab_utils/models/random_models.py) and the machine
(device, versions, peak memory, one case per process: lab_utils/core/machine.py) live in the
library, because scripts/verify_gpu.py uses them too; they are re-exported here for the benchmarks.
"""

import time
from pathlib import Path

# The machine and the random-weight models live in the library (scripts/verify_gpu.py uses them too);
# the benchmarks import them from here with the rest.
from lab_utils.core.machine import (cuda_available, environment, gpu_name, has_package,  # noqa: F401
                                    peak_memory_gib, reset_peak_memory, run_isolated, skip_reasons, synchronize)
from lab_utils.models.random_models import (GPU_MODELS, MODEL_CONFIGS, SMOKE_MODEL, VISION_CONFIGS,  # noqa: F401
                                            build_random_model, build_random_vision_model, ensure_random_model,
                                            ensure_random_vision_model, model_config, random_model_dir,
                                            vision_family, vision_model_config, vision_processor)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- data

def fixed_length_rows(tokenizer, n_rows: int, seq_len: int, data_file: str = "alpaca_sample.jsonl") -> list[dict]:
    """n_rows rows of exactly seq_len tokens: chat-formatted conversations laid end to end.

    Equal lengths mean every backend trains exactly batch x seq_len tokens a step
    (no padding to disagree about), so tokens/s compare like for like. Labels are
    the assistant tokens, as in real SFT.
    """
    from lab_utils.models.chat import tokenize_conversation

    encoded = [tokenize_conversation(tokenizer, m, max_length=seq_len) for m in conversations(data_file)]
    stream_ids, stream_labels, rows, i = [], [], [], 0
    while len(rows) < n_rows:
        conversation = encoded[i % len(encoded)]
        stream_ids += conversation["input_ids"]
        stream_labels += conversation["labels"]
        i += 1
        while len(stream_ids) >= seq_len and len(rows) < n_rows:
            rows.append({"input_ids": stream_ids[:seq_len], "labels": stream_labels[:seq_len]})
            stream_ids, stream_labels = stream_ids[seq_len:], stream_labels[seq_len:]
    return rows


def conversations(data_file: str) -> list:
    """The chat conversations of a bundled/LAB_DATA_DIR file: alpaca/messages/ShareGPT, or a medical CSV."""
    if data_file.lower().endswith((".csv", ".tsv")):
        from data_loaders.medical_csv import load_medical_csv

        return list(load_medical_csv(data_file).dataset["messages"])
    from data_loaders.alpaca import load_chat_file

    dataset, _ = load_chat_file(data_file)
    return list(dataset["messages"])


def natural_length_rows(tokenizer, n_rows: int, max_len: int, data_file: str = "alpaca_sample.jsonl",
                        seed: int = 0) -> list[dict]:
    """n_rows conversations at their own lengths (truncated at max_len), in a seeded order, repeated as needed.

    Real SFT data: short and long rows mixed, so a trainer that pads each batch to its
    longest row computes on padding, and one that packs (the lab's padding-free batches)
    does not. Every backend gets the same rows; throughput counts real (non-padding) tokens.
    """
    import random

    from lab_utils.models.chat import IGNORE_INDEX, tokenize_conversation

    encoded = [tokenize_conversation(tokenizer, m, max_length=max_len) for m in conversations(data_file)]
    encoded = [e for e in encoded if any(t != IGNORE_INDEX for t in e["labels"][1:])]
    if not encoded:
        raise ValueError(f"{data_file}: no conversation keeps any answer token within {max_len} tokens; "
                         "raise --seq_len")
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    return [encoded[order[i % len(order)]] for i in range(n_rows)]


# ---------------------------------------------------------------- model FLOPs utilisation

# Dense bf16 tensor-core peak (no sparsity), FLOP/s, from the vendors' data sheets (SXM parts).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12,
                   "RTX 4090": 165e12}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


def lora_flops_per_token(model_dir: str, context: float) -> float:
    """Model FLOPs to train one token with LoRA (frozen base): 4 * N_linear + 4 * layers * hidden * context.

    Forward: 2 FLOPs per weight of every matmul (N_linear: all nn.Linear weights, lm_head
    included, the embedding lookup excluded) plus causal attention, 2 * layers * hidden *
    context (QK^T and AV over an average of context/2 earlier tokens). LoRA's backward pass
    needs the activation gradients (as much again) but no gradients for the frozen weights,
    so training is 2x the forward, where full fine-tuning is 3x (the usual 6 * N). The
    LoRA matrices themselves (<1%) and recomputation by checkpointing are not counted:
    MFU is useful work per second over the GPU's peak, whatever the implementation spends.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 4 * n_linear + 4 * config.num_hidden_layers * config.hidden_size * context


def mfu_percent(tokens_per_s: float | None, flops_per_token: float | None, device_name: str) -> float | None:
    peak = peak_flops(device_name)
    if not (tokens_per_s and flops_per_token and peak):
        return None
    return round(100 * tokens_per_s * flops_per_token / peak, 1)


# ---------------------------------------------------------------- timing

def steady_rate(step_times: list[float], tokens_per_step: int, warmup_steps: int) -> float | None:
    """Tokens per second over the steps after the warm-up ones (compilation, allocator growth)."""
    measured = step_times[warmup_steps:]
    if len(measured) < 2:
        return None
    return round(tokens_per_step * (len(measured) - 1) / (measured[-1] - measured[0]), 1)


# ---------------------------------------------------------------- reporting

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
    from lab_utils.core.artifacts import write_json

    write_json(payload, path)
    print(f"[bench] wrote {path}")
    return path


def report(name: str, title: str, a, rows: list[dict], columns: list[str]) -> dict:
    """Print the table, write the JSON (settings, environment, rows) when --out asks for it; the result."""
    print_table(title, rows, columns)
    result = {"benchmark": name, "settings": {k: v for k, v in vars(a).items() if k != "out"},
              "environment": environment(), "rows": rows}
    write_results(name, result, a.out)
    return result


def run_case(module: str, function: str, payload: dict) -> dict:
    """One benchmark case: in a fresh Python on a GPU (Unsloth patches a process for good, and each case's peak
    memory must be its own), in this process on a CPU, where neither applies and a new process only adds its
    start-up (~10 s of imports). Either way {"status": "ok", "value": ...} or the error's one line."""
    if cuda_available():
        return run_isolated(module, function, payload)
    import importlib

    try:
        return {"status": "ok", "value": getattr(importlib.import_module(module), function)(**payload)}
    except Exception as err:  # a case that fails is a row of the table, not the end of the sweep
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        return {"status": f"failed: {type(err).__name__}: {first_line}"}
