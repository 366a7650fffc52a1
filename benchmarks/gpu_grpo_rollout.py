"""GRPO rollout speed: vLLM against transformers' generate, same prompts, group size and lengths.

    python -m benchmarks.gpu_grpo_rollout                       # GPU: Qwen2.5-0.5B/1.5B shapes
    python -m benchmarks.gpu_grpo_rollout --models qwen2.5-7b --group_size 16 --out
    python -m benchmarks.gpu_grpo_rollout --smoke               # CPU, seconds: HF path only

A GRPO step spends most of its time sampling `group_size` answers per prompt. Engines:
    hf             model.generate(do_sample, num_return_sequences=group_size): TRL's default
    vllm           vllm.LLM on the same model folder, SamplingParams(n=group_size)
    unsloth-vllm   Unsloth FastLanguageModel(fast_inference=True).fast_generate (vLLM inside,
                   sharing the weights with the training model: what the lab's GRPO uses on GPU)

Every answer is forced to exactly max_new_tokens (min_new_tokens / ignore_eos), so all
engines produce the same number of tokens; tokens/s = generated tokens / wall time of
one call, after an untimed warm-up call (CUDA graphs, kernel autotuning). Base weights,
no LoRA: vLLM serves a LoRA through LoRARequest, which this benchmark does not time.
vLLM is imported only inside its engine function, so nothing on CPU ever imports it.
Peak memory is reported for hf only: vLLM reserves --gpu_memory_utilization up front.
"""

import argparse
import time

from benchmarks.common import (SMOKE_MODEL, ensure_random_model, peak_memory_gib, ratio, report, reset_peak_memory,
                               run_isolated, skip_reasons, synchronize)

ENGINES = ["hf", "vllm", "unsloth-vllm"]
NEEDS = {"hf": [], "vllm": ["cuda", "vllm"], "unsloth-vllm": ["cuda", "unsloth", "vllm"]}
COLUMNS = ["model", "engine", "prompts", "group_size", "new_tokens", "tokens_per_s", "speed_vs_hf", "peak_gib",
           "seconds", "status"]


def rollout_prompts(model_dir: str, n_prompts: int) -> list[str]:
    """The first n prompts of the bundled sample, rendered with the chat template."""
    from data_loaders.alpaca import load_chat_file
    from lab_utils.models.chat import prompt_of, render
    from lab_utils.models.registry import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    dataset, _ = load_chat_file("alpaca_sample.jsonl", limit=n_prompts)
    return [render(tokenizer, prompt_of(m), add_generation_prompt=True) for m in dataset["messages"]]


def timed(call):
    synchronize()
    started = time.perf_counter()
    value = call()
    synchronize()
    return value, time.perf_counter() - started


# ---------------------------------------------------------------- engines (each runs in a child process)

def hf_rollout(model_dir, prompts, group_size, new_tokens):
    import torch
    from transformers import AutoModelForCausalLM

    from lab_utils.models.registry import load_tokenizer

    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa").to("cuda" if cuda else "cpu").eval()
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)

    def sample(n):
        with torch.no_grad():
            return model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, num_return_sequences=group_size,
                                  max_new_tokens=n, min_new_tokens=n, pad_token_id=tokenizer.pad_token_id)

    sample(min(8, new_tokens))  # warm-up
    out, seconds = timed(lambda: sample(new_tokens))
    return (out.shape[0] * (out.shape[1] - batch["input_ids"].shape[1])), seconds


def vllm_sampling(group_size, new_tokens):
    from vllm import SamplingParams

    return SamplingParams(n=group_size, temperature=1.0, top_p=1.0, max_tokens=new_tokens, min_tokens=new_tokens,
                          ignore_eos=True, seed=0)


def vllm_rollout(model_dir, prompts, group_size, new_tokens, gpu_memory_utilization, max_model_len):
    from vllm import LLM

    llm = LLM(model=model_dir, dtype="bfloat16", gpu_memory_utilization=gpu_memory_utilization,
              max_model_len=max_model_len, seed=0)
    llm.generate(prompts, vllm_sampling(group_size, min(8, new_tokens)), use_tqdm=False)  # warm-up
    outputs, seconds = timed(lambda: llm.generate(prompts, vllm_sampling(group_size, new_tokens), use_tqdm=False))
    return sum(len(c.token_ids) for o in outputs for c in o.outputs), seconds


def unsloth_vllm_rollout(model_dir, prompts, group_size, new_tokens, gpu_memory_utilization, max_model_len):
    from lab_utils.core.backend import import_unsloth

    import_unsloth()
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=max_model_len, load_in_4bit=False,
                                                 fast_inference=True, gpu_memory_utilization=gpu_memory_utilization,
                                                 max_lora_rank=16)
    model.fast_generate(prompts, sampling_params=vllm_sampling(group_size, min(8, new_tokens)), use_tqdm=False)
    outputs, seconds = timed(lambda: model.fast_generate(prompts, sampling_params=vllm_sampling(group_size, new_tokens),
                                                         use_tqdm=False))
    return sum(len(c.token_ids) for o in outputs for c in o.outputs), seconds


def rollout_case(model_dir: str, engine: str, n_prompts: int, group_size: int, new_tokens: int,
                 gpu_memory_utilization: float, max_model_len: int) -> dict:
    reset_peak_memory()
    prompts = rollout_prompts(model_dir, n_prompts)
    if engine == "hf":
        tokens, seconds = hf_rollout(model_dir, prompts, group_size, new_tokens)
    else:
        rollout = vllm_rollout if engine == "vllm" else unsloth_vllm_rollout
        tokens, seconds = rollout(model_dir, prompts, group_size, new_tokens, gpu_memory_utilization, max_model_len)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
            "peak_gib": peak_memory_gib() if engine == "hf" else None}


# ---------------------------------------------------------------- the sweep

def run_cases(a) -> list[dict]:
    rows = []
    for model in a.models:
        for engine in a.engines:
            row = {"model": model, "engine": engine, "prompts": a.prompts, "group_size": a.group_size,
                   "new_tokens": a.new_tokens}
            skipped = skip_reasons(NEEDS[engine])
            if skipped:
                rows.append({**row, "status": f"skipped: {skipped}"})
                print(f"[bench] {model} {engine}: skipped ({skipped})", flush=True)
                continue
            payload = dict(model_dir=ensure_random_model(model, a.tokenizer), engine=engine, n_prompts=a.prompts,
                           group_size=a.group_size, new_tokens=a.new_tokens,
                           gpu_memory_utilization=a.gpu_memory_utilization, max_model_len=a.max_model_len)
            print(f"[bench] {model} {engine}: {a.prompts} prompts x {a.group_size} x {a.new_tokens} tokens ...", flush=True)
            outcome = run_isolated("benchmarks.gpu_grpo_rollout", "rollout_case", payload)
            rows.append({**row, **outcome.get("value", {}), "status": outcome["status"]})
    base = {r["model"]: r for r in rows if r["engine"] == "hf" and r["status"] == "ok"}
    for r in rows:
        r["speed_vs_hf"] = ratio(r.get("tokens_per_s"), base.get(r["model"], {}).get("tokens_per_s"))
    return rows


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny 2-layer model, a few tokens (CPU is fine)")
    parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b"])
    parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group_size", type=int, default=8, help="answers sampled per prompt (GRPO's G)")
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--gpu_memory_utilization", type=float, default=0.6)
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id (default: the embedded SmolLM2)")
    parser.add_argument("--out", nargs="?", const="", default=None, help="write JSON (default folder: benchmarks/results/)")
    a = parser.parse_args(argv)
    if a.smoke:
        a.models, a.prompts, a.group_size, a.new_tokens = [SMOKE_MODEL], 2, 2, 8
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    rows = run_cases(a)
    return report("gpu_grpo_rollout", f"GRPO rollouts: {a.prompts} prompts x group {a.group_size} x {a.new_tokens} "
                  "new tokens", a, rows, COLUMNS)


if __name__ == "__main__":
    main()
