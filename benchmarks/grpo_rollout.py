"""GRPO rollout speed: vLLM vs HF generate, the same model, prompts and sampling.

    python -m benchmarks.grpo_rollout                                   # CPU: the HF row only
    python -m benchmarks.grpo_rollout --model Qwen/Qwen2.5-1.5B-Instruct --prompts 32 --max_new_tokens 256

A GRPO step is mostly generation: num_generations sampled completions for each
prompt. Both engines get the same GSM8K prompts (chat template + the format
instruction, as the trainer sees them), the same num_generations, temperature and
max_new_tokens, and are timed in one process after one untimed warm-up call each.
Tokens are the completions' real tokens (up to and including the end-of-turn token;
padding after it excluded). The goal on a GPU is vLLM >= 10x HF generate.

On a machine without CUDA or vllm the vLLM row says so and only the HF row is
timed, so a regression in the CPU rollout path still shows. vllm is imported only
when a GPU and the package are present.
"""

import argparse
import json

from lab_utils.core.backend import cuda_available, vllm_available


def gsm8k_prompts(tokenizer, data_file: str, count: int) -> list[str]:
    from data_loaders.gsm8k import load_gsm8k

    rows = load_gsm8k(data_file, limit=count)
    return [tokenizer.apply_chat_template(r, tokenize=False, add_generation_prompt=True) for r in rows["prompt"]]


def time_hf(source: str, prompts: list[str], a) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from lab_utils.models.registry import load_tokenizer
    from lab_utils.training.rollouts import hf_rollout

    device = "cuda" if cuda_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    hf_rollout(model, tokenizer, prompts[:1], a.num_generations, 8, a.temperature)  # warm-up, untimed
    result = hf_rollout(model, tokenizer, prompts, a.num_generations, a.max_new_tokens, a.temperature)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"engine": f"HF generate ({device})", **result}


def time_vllm(source: str, prompts: list[str], a) -> dict:
    if not vllm_available():
        return {"engine": "vLLM", "skipped": "skipped: no CUDA/vllm"}
    from vllm import LLM

    from lab_utils.training.rollouts import vllm_rollout

    llm = LLM(model=source, gpu_memory_utilization=a.gpu_memory_utilization, max_model_len=a.max_model_len,
              seed=a.seed, enforce_eager=False)
    vllm_rollout(llm, prompts[:1], a.num_generations, 8, a.temperature)  # warm-up (CUDA graphs), untimed
    return {"engine": "vLLM", **vllm_rollout(llm, prompts, a.num_generations, a.max_new_tokens, a.temperature)}


def table(rows: list[dict]) -> str:
    lines = [f"{'engine':<22} {'completions':>11} {'tokens':>8} {'seconds':>8} {'tokens/s':>9}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['engine']:<22} {r['skipped']}")
            continue
        r["tokens_per_second"] = round(r["tokens"] / r["seconds"], 1)
        lines.append(f"{r['engine']:<22} {r['completions']:>11} {r['tokens']:>8} {r['seconds']:>8.2f} "
                     f"{r['tokens_per_second']:>9.1f}")
    timed = {r["engine"].split(" ")[0]: r["tokens_per_second"] for r in rows if "tokens_per_second" in r}
    if "vLLM" in timed and "HF" in timed:
        lines.append(f"vLLM / HF generate: {timed['vLLM'] / timed['HF']:.1f}x (goal >= 10x)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="registry name, local folder or hub id")
    parser.add_argument("--data_file", default="gsm8k_sample.jsonl")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--gpu_memory_utilization", type=float, default=0.5)
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    a = parser.parse_args(argv)

    import torch

    from lab_utils.models.registry import load_tokenizer, resolve_model

    torch.manual_seed(a.seed)
    source = resolve_model(a.model)
    prompts = gsm8k_prompts(load_tokenizer(source), a.data_file, a.prompts)
    rows = [time_hf(source, prompts, a), time_vllm(source, prompts, a)]
    print(f"{a.model}: {len(prompts)} prompts x {a.num_generations} generations, "
          f"<= {a.max_new_tokens} new tokens, temperature {a.temperature}")
    print(table(rows))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
