"""Rollouts for GRPO: who writes the completions, vLLM or HF generate, chosen once.

GRPO spends most of a step *generating* (num_generations completions per prompt),
so the rollout engine sets the pace. Three ways, picked by `choose_rollouts`:

    vllm via unsloth  FastLanguageModel(fast_inference=True): one vLLM engine inside the
                      model shares its weights and serves the LoRA adapter as it trains
    vllm via TRL      GRPOConfig(use_vllm=True, vllm_mode="colocate"): TRL starts vLLM in
                      this process and copies the updated weights into it every step
    hf                model.generate() on the training model (CPU, or a GPU without vLLM)

Nothing here imports vllm or unsloth unless a CUDA GPU and the package are present
(`lab_utils.core.backend.vllm_available`), so a CPU run never touches them.
`p` is any Params with the shared LoRA fields (lab_utils.training.params.LoraParams) plus
`rollouts` (auto | vllm | hf) and `vllm_gpu_memory_utilization`.
"""

import time
from dataclasses import dataclass

from lab_utils.core.backend import Backend, cuda_available, has_package, vllm_available


@dataclass(frozen=True)
class Rollouts:
    engine: str  # "vllm" or "hf"
    reason: str

    @property
    def uses_vllm(self) -> bool:
        return self.engine == "vllm"


def choose_rollouts(requested: str, backend: Backend) -> Rollouts:
    """auto -> vLLM where a GPU and vllm are present, else HF generate; vllm on a CPU is an error."""
    requested = (requested or "auto").strip().lower()
    if requested not in ("auto", "vllm", "hf"):
        raise ValueError(f"rollouts={requested!r}: expected auto, vllm or hf")
    if requested == "hf":
        return Rollouts("hf", "forced: rollouts=hf")
    if requested == "vllm":
        if not cuda_available():
            raise RuntimeError("rollouts=vllm needs a CUDA GPU and none is visible; use rollouts auto or hf on CPU")
        if not has_package("vllm"):
            raise RuntimeError("rollouts=vllm but vllm is not installed: pip install -r requirements-gpu.txt")
        return Rollouts("vllm", "forced: rollouts=vllm")
    if backend.device != "cuda":
        return Rollouts("hf", "no CUDA GPU: HF generate (vLLM needs one)")
    if not vllm_available():
        return Rollouts("hf", "CUDA is available but vllm is not installed (pip install -r requirements-gpu.txt)")
    via = "unsloth fast_inference" if backend.is_unsloth else "TRL colocate mode"
    return Rollouts("vllm", f"CUDA GPU and vllm available ({via})")


def load_fast_inference_model(p, source: str):
    """Unsloth model + LoRA with a vLLM engine attached (model.vllm_engine, model.fast_generate).

    max_lora_rank must cover lora_r: vLLM reserves adapter slots of that rank up front.
    gpu_memory_utilization is vLLM's share of the GPU (KV cache + its weights); the
    rest is left to training. The LoRA itself is the shared one (lab_utils.training.params).
    """
    from lab_utils.training.lora import load_unsloth_model

    return load_unsloth_model(p, source, fast_inference=True, max_lora_rank=p.lora_r,
                              gpu_memory_utilization=p.vllm_gpu_memory_utilization)


def vllm_config_kwargs(p, rollouts: Rollouts, backend: Backend) -> dict:
    """The GRPOConfig fields that switch rollouts to vLLM (empty for HF generate).

    Unsloth reads the engine it built (fast_inference) from the model and only needs
    use_vllm; plain TRL starts its own colocated engine and needs its memory share and
    the context length (prompt + completion) to size the KV cache.
    """
    if not rollouts.uses_vllm:
        return {}
    if backend.is_unsloth:
        return {"use_vllm": True}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": p.vllm_gpu_memory_utilization,
            "vllm_max_model_length": p.max_prompt_length + p.max_completion_length}


# ---------------------------------------------------------------- timing (benchmarks/grpo_rollout.py)

def hf_rollout(model, tokenizer, prompts: list[str], num_generations: int, max_new_tokens: int,
               temperature: float = 1.0) -> dict:
    """Sample num_generations completions per prompt with HF generate; tokens and seconds."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens,
                                 num_return_sequences=num_generations, pad_token_id=tokenizer.pad_token_id)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        tokenizer.padding_side = side
    new = out[:, batch["input_ids"].shape[1]:]
    # tokens up to and including the first eos count; padding after it is not generated text
    ended = (new == tokenizer.eos_token_id).int().cumsum(dim=1)
    tokens = int(((ended == 0) | ((ended == 1) & (new == tokenizer.eos_token_id))).sum())
    return {"tokens": tokens, "seconds": seconds, "completions": len(new)}


def vllm_rollout(llm, prompts: list[str], num_generations: int, max_new_tokens: int, temperature: float = 1.0,
                 lora_request=None) -> dict:
    """The same rollout with a vLLM engine (`vllm.LLM` or Unsloth's model.vllm_engine)."""
    from vllm import SamplingParams

    params = SamplingParams(n=num_generations, temperature=temperature, max_tokens=max_new_tokens)
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, lora_request=lora_request, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"tokens": tokens, "seconds": seconds, "completions": sum(len(o.outputs) for o in outputs)}
