"""LoRA for Qwen2.5-VL and Qwen3-VL with Unsloth's four switches: vision/language layers, attention/MLP modules.

GPU / unsloth: `FastVisionModel.get_peft_model`. CPU / hf: peft with a target regex that
picks the same modules (`vision_lora_target_regex`).
"""

import torch

from lab_utils.core.backend import get_backend, import_unsloth
from lab_utils.core.errors import ParamError


def vision_lora_target_regex(finetune_vision_layers: bool = True, finetune_language_layers: bool = True,
                             finetune_attention_modules: bool = True, finetune_mlp_modules: bool = True) -> str:
    """A peft target_modules regex (full match on module names) mirroring Unsloth's four switches.

    Language model: q/k/v/o_proj and gate/up/down_proj under `language_model`.
    Vision tower: attn.qkv/attn.proj and the block MLPs under `visual.blocks` (Qwen2.5-VL
    gate/up/down_proj, Qwen2-VL fc1/fc2, Qwen3-VL linear_fc1/linear_fc2); the patch merger (and
    Qwen3-VL's DeepStack mergers) stay frozen, as in Unsloth.
    """
    if not (finetune_vision_layers or finetune_language_layers):
        raise ParamError("finetune_vision_layers and finetune_language_layers are both False: nothing to train")
    if not (finetune_attention_modules or finetune_mlp_modules):
        raise ParamError("finetune_attention_modules and finetune_mlp_modules are both False: nothing to train")
    parts = []
    if finetune_language_layers:
        names = (["q_proj", "k_proj", "v_proj", "o_proj"] if finetune_attention_modules else []) + \
                (["gate_proj", "up_proj", "down_proj"] if finetune_mlp_modules else [])
        parts.append(rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(names)})")
    if finetune_vision_layers:
        names = (["attn.qkv", "attn.proj"] if finetune_attention_modules else []) + \
                (["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp.fc1", "mlp.fc2",
                 "mlp.linear_fc1", "mlp.linear_fc2"] if finetune_mlp_modules else [])
        parts.append(rf".*visual\.blocks\.\d+\.({'|'.join(n.replace('.', r'.') for n in names)})")
    return "|".join(f"(?:{p})" for p in parts)


def add_vision_lora(model, backend=None, r: int = 16, lora_alpha: int = 16, lora_dropout: float = 0.0,
                    use_rslora: bool = False, use_dora: bool = False, finetune_vision_layers: bool = True,
                    finetune_language_layers: bool = True,
                    finetune_attention_modules: bool = True, finetune_mlp_modules: bool = True, seed: int = 3407,
                    modules_to_save: list[str] | None = None):
    """Wrap the model with LoRA adapters; the switches mean what they mean in Unsloth.

    `modules_to_save` (peft's name) are trained fully next to the adapters and saved with them,
    e.g. ["lm_head"] for a model whose output layer has never been trained (the tiny random one).
    """
    backend = backend or get_backend()
    switches = dict(finetune_vision_layers=finetune_vision_layers, finetune_language_layers=finetune_language_layers,
                    finetune_attention_modules=finetune_attention_modules, finetune_mlp_modules=finetune_mlp_modules)
    fully_trained = {"modules_to_save": list(modules_to_save)} if modules_to_save else {}
    if backend.is_unsloth:
        import_unsloth()
        from unsloth import FastVisionModel

        return FastVisionModel.get_peft_model(model, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                              bias="none", random_state=seed, use_rslora=use_rslora,
                                              use_dora=use_dora, loftq_config=None, **switches, **fully_trained)
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapters
    config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias="none", use_rslora=use_rslora,
                        use_dora=use_dora, target_modules=vision_lora_target_regex(**switches), task_type="CAUSAL_LM",
                        **fully_trained)
    return get_peft_model(model, config)
