"""A base model with a LoRA adapter attached, on either backend; precision and quantisation.
"""

import torch
from lab_utils.core.backend import Backend, import_unsloth
from lab_utils.core.distributed import model_device_map
from lab_utils.models.registry import load_tokenizer, lora_target_modules, resolve_model
from lab_utils.core.errors import MachineError, ParamError
from lab_utils.core.knob_checks import CHOICES


def resolve_precision(precision: str, device: str) -> str:
    """auto -> bf16 where the hardware does bf16 math natively, fp16 on older GPUs, else fp32.

    On a CPU with AVX512-BF16 (or AMX), bf16 autocast measured ~1.8x the fp32 training
    throughput of the embedded model (benchmarks/sft_throughput.py) at the same loss.
    """
    if precision != "auto":
        if precision not in CHOICES["precision"]:
            raise ParamError(f"precision={precision!r}: expected auto, bf16, fp16 or fp32")
        return precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "fp32"


def weights_dtype(precision: str, device: str):
    """The dtype frozen base weights are loaded in. On CPU they stay fp32 and bf16 comes
    from autocast (TrainingArguments.bf16), which keeps LoRA's updates in full precision."""
    if device == "cpu":
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[resolve_precision(precision, device)]


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, device: str):
    """bitsandbytes QLoRA config (GPU only: bitsandbytes kernels are CUDA kernels)."""
    if not (load_in_4bit or load_in_8bit):
        return None
    if device != "cuda":
        raise MachineError("load_in_4bit/load_in_8bit (QLoRA) need a CUDA GPU; set both to false on CPU")
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=weights_dtype("auto", device))


def lora_kwargs(p) -> dict:
    return dict(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout, use_rslora=p.use_rslora)


def build_lora_model(p, backend: Backend):
    """(model with LoRA attached, tokenizer) for Params with the shared LoRA/precision fields."""
    source = resolve_model(p.model)
    if backend.is_unsloth:
        return load_unsloth_model(p, source)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(source, p.trust_remote_code)
    quant = quantization_config(p.load_in_4bit, p.load_in_8bit, backend.device)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=weights_dtype(p.precision, backend.device), quantization_config=quant,
        device_map=model_device_map(backend.device), attn_implementation="sdpa",
        trust_remote_code=p.trust_remote_code,
    )
    model.config.use_cache = False  # a KV cache in training disables the packed-sequence mask
    # QLoRA without peft's prepare_model_for_kbit_training: it casts every weight that is not quantised
    # (embeddings, lm_head, norms) to fp32. With Qwen2.5's 152k vocabulary that is +0.47 GB (1.5B, tied)
    # to +2.2 GB (7B) of frozen weights, and under bf16 autocast the fp32 head is cast back to a bf16 copy
    # on every forward. Frozen weights stay in the compute dtype; the LoRA weights are fp32 anyway
    # (get_peft_model's autocast_adapter_dtype); checkpointing needs only what follows.
    if p.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(task_type="CAUSAL_LM", target_modules=lora_target_modules(model, p.lora_mlp),
                        use_dora=p.use_dora, **lora_kwargs(p))
    # LoRA A starts random: seeded, the same seed gives the same adapter in every run and on every rank
    # (FSDP2 does not broadcast rank 0's weights the way DDP does; each rank's shard comes from its own init)
    torch.manual_seed(p.seed)
    return get_peft_model(model, config), tokenizer


def load_unsloth_model(p, source: str, **engine):
    """Unsloth FastLanguageModel + LoRA. `engine`: extra from_pretrained options, e.g. the vLLM
    engine for GRPO rollouts (lab_utils.training.rollouts.load_fast_inference_model)."""
    import_unsloth()
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=p.max_seq_length, dtype=None,
        load_in_4bit=p.load_in_4bit, load_in_8bit=p.load_in_8bit, trust_remote_code=p.trust_remote_code, **engine,
    )
    model = FastLanguageModel.get_peft_model(
        model, target_modules=lora_target_modules(model, p.lora_mlp), bias="none",
        use_gradient_checkpointing="unsloth" if p.gradient_checkpointing else False,
        random_state=p.seed, use_dora=p.use_dora, **lora_kwargs(p),
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def trainable_parameters(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "percent": round(100 * trainable / total, 3)}


def load_lora_model(p):
    """(LoRA model, tokenizer, backend): the backend is chosen (and announced) once."""
    from lab_utils.core.backend import get_backend
    from lab_utils.models.chat import set_thinking

    backend = get_backend(p.backend)
    model, tokenizer = build_lora_model(p, backend)
    set_thinking(tokenizer, getattr(p, "enable_thinking", None))  # every render, tokenization, generation
    print(f"[lab] {p.model}: {trainable_parameters(model)}")
    return model, tokenizer, backend
