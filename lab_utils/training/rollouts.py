"""Rollouts for GRPO: who writes the completions, vLLM or HF generate, chosen once.

GRPO spends most of a step *generating* (num_generations completions per prompt),
so the rollout engine sets the pace. Three ways, picked by `choose_rollouts`:

    vllm via unsloth  (CUDA + unsloth) FastLanguageModel(fast_inference=True): one vLLM engine
                      inside the model shares its weights and serves the LoRA adapter as it trains
    vllm via the lab  (CPU, or CUDA with the hf backend) the lab's own in-process engine
                      (lab_utils.training.vllm_engine) driven through TRL's rollout_func: before
                      each generation the adapter being trained is saved and served as a fresh
                      LoRARequest, so vLLM samples from the current policy
    hf                model.generate() on the training model (vLLM not installed, or rollouts: hf)

Why not TRL's own colocate mode (use_vllm=True) for CUDA + hf: on a CPU its weight sync
fails (vLLM's CPU layers repack their weights), and one rollout_func path that runs on
every machine, CI included, beats a GPU-only path nobody can test. Publishing the LoRA
(tens of MB) is also cheaper than TRL's merge-and-copy of every weight each step.
With use_vllm=False TRL ignores the sampling logprobs (no importance-sampling correction);
that is right here because the engine serves the current adapter (on-policy) and its
logprobs match HF's to ~1e-5.

Nothing here imports vllm or unsloth until a vLLM path is chosen (`has_package` only looks).
`p` is any Params with the shared LoRA fields (lab_utils.training.params.LoraParams) plus
`rollouts` (auto | vllm | hf) and `vllm_gpu_memory_utilization`.
"""

import os
import time
from dataclasses import dataclass

from lab_utils.core.errors import ParamError
from lab_utils.core.knob_checks import CHOICES
from lab_utils.core.backend import Backend, has_package
from lab_utils.training.vllm_engine import SETUP_HINT, EngineError, start_engine, vllm_build


@dataclass(frozen=True)
class Rollouts:
    engine: str  # "vllm" or "hf"
    reason: str
    unsloth: bool = False  # vLLM inside Unsloth's model (fast_inference) rather than the lab's own engine

    @property
    def uses_vllm(self) -> bool:
        return self.engine == "vllm"

    @property
    def lab_engine(self) -> bool:
        """The lab starts (and grades with) its own engine: vLLM without Unsloth."""
        return self.uses_vllm and not self.unsloth


def choose_rollouts(requested: str, backend: Backend) -> Rollouts:
    """auto -> vLLM wherever it is installed, else HF generate; vllm without vLLM is a one-line error."""
    requested = (requested or "auto").strip().lower()
    if requested not in CHOICES["rollouts"]:
        raise ParamError(f"rollouts={requested!r}: expected auto, vllm or hf")
    if requested == "hf":
        return Rollouts("hf", "forced: rollouts=hf")
    if not has_package("vllm"):
        if requested == "vllm":
            raise EngineError(f"rollouts=vllm but vLLM is not installed: run `{SETUP_HINT}` (or use rollouts: hf)")
        return Rollouts("hf", f"vLLM is not installed: HF generate (`{SETUP_HINT}` for the fast path)")
    unsloth = backend.is_unsloth and backend.device == "cuda"
    via = ("inside Unsloth's model (fast_inference)" if unsloth
           else "the lab's in-process engine, adapter served each step")
    return Rollouts("vllm", f"{'forced' if requested == 'vllm' else 'installed'}: {vllm_build()} on "
                            f"{backend.device}, {via}", unsloth)


def start_rollout_engine(p, model_dir: str, dtype: str):
    """The lab's engine for rollouts and greedy grading (context: prompt + completion, or max_seq_length)."""
    length = max(p.max_seq_length, p.max_prompt_length + p.max_completion_length)
    engine = start_engine(model_dir, max_model_len=length, lora_rank=p.lora_r, dtype=dtype, seed=p.seed,
                          gpu_memory_utilization=p.vllm_gpu_memory_utilization)
    print(f"[lab] vLLM engine started in {engine.start_seconds:.1f} s ({vllm_build()})", flush=True)
    return engine


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
    """The GRPOConfig fields for the rollouts: Unsloth reads the engine it built from the model
    (use_vllm); the lab's engine comes in through rollout_func, so TRL's own stays off."""
    return {"use_vllm": True} if rollouts.uses_vllm and rollouts.unsloth else {}


class VllmRolloutFunc:
    """GRPOTrainer(rollout_func=...): (prompts, trainer) -> prompt_ids, completion_ids, logprobs.

    TRL 1.14 hands over the raw prompts (message lists, not yet templated) already repeated
    num_generations times; each distinct prompt is sampled once with n = its count, and the
    completions go back in the order of the prompts. Sampling settings are the trainer's.
    """

    def __init__(self, engine):
        self.engine = engine
        self.seconds = 0.0
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.14

    def __call__(self, prompts: list, trainer) -> dict:
        from vllm import SamplingParams

        started = time.perf_counter()
        self.engine.publish(trainer.accelerator.unwrap_model(trainer.model))  # the policy as it is now
        prompt_ids = [list(ids) for ids in trainer._tokenize_prompts(prompts)[0]]  # templated exactly as TRL does
        counts = {}
        for ids in prompt_ids:
            counts[tuple(ids)] = counts.get(tuple(ids), 0) + 1
        a = trainer.args
        params = [SamplingParams(n=n, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k or 0,
                                 min_p=a.min_p or 0.0, repetition_penalty=a.repetition_penalty,
                                 max_tokens=a.max_completion_length, logprobs=0) for n in counts.values()]
        outputs = self.engine.generate([list(k) for k in counts], params)
        pending = {key: list(out.outputs) for key, out in zip(counts, outputs)}
        completion_ids, logprobs = [], []
        for ids in prompt_ids:
            sample = pending[tuple(ids)].pop(0)
            completion_ids.append(list(sample.token_ids))
            logprobs.append([step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)])
        self.seconds += time.perf_counter() - started
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}
