"""Qwen2.5-VL models for the lab: the tiny random CPU model built in code, and loading on either backend.

    CPU / hf        a real Qwen2.5-VL architecture at toy size, randomly initialised from a
                    seeded config (`tiny-qwen2.5-vl` in the model registry, built once into
                    $LAB_MODELS_DIR/tiny-qwen2.5-vl/ as safetensors), the SmolLM2 tokenizer plus
                    the Qwen vision special tokens and chat template, and the image-only
                    processor of lab_utils.vision.processor.
    GPU / unsloth   `FastVisionModel.from_pretrained`, any Qwen2.5-VL id (4-bit optional).
"""

import json
import logging
from pathlib import Path

import torch

from lab_utils.core.backend import get_backend, import_unsloth
from lab_utils.models.registry import save_model_folder
from lab_utils.core.paths import build_lock, models_dir
from lab_utils.vision.processor import (PROCESSOR_MARKER, QWEN_VL_CHAT_TEMPLATE, VISION_SPECIAL_TOKENS, ImageTextProcessor, load_vision_processor)
from lab_utils.core.errors import MachineError

log = logging.getLogger("lab")

TINY_VISION_NAME = "tiny-qwen2.5-vl"  # registry name and folder name under LAB_MODELS_DIR
TINY_RECIPE_FILE = "lab_tiny_recipe.json"  # what the cached folder was built from: rebuilt when it differs

# A real Qwen2.5-VL at toy size: 2 text layers of width 64 (head_dim 16, so mrope_section
# must sum to 8), a 2-block vision tower of width 32. ~6.5M parameters, most of them the
# 49k-token embedding and output layer; a forward+backward on a few small images takes tens of ms.
TINY_TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=4096,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
TINY_VISION_CONFIG = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                          fullatt_block_indexes=[1])
# 28-px merged patches: a 56x56 picture is 4 image tokens, a 448x448 one (the loader's default limit) 256.
TINY_IMAGE_PIXELS = dict(min_pixels=56 * 56, max_pixels=448 * 448)
# Weights drawn with std 1/sqrt(width) instead of the usual 0.02, which is tuned for layers
# hundreds of units wide: at width 64 and 0.02 each layer's output is a few percent of its
# input, the picture barely reaches the answer position, and nothing learns in minutes.
TINY_INIT_STD = 0.125


def tiny_vision_tokenizer():
    """The embedded SmolLM2 tokenizer, plus the Qwen vision tokens and chat template."""
    from lab_utils.models.registry import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_SPECIAL_TOKENS})
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def tiny_vision_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VISION_SPECIAL_TOKENS}
    text = dict(TINY_TEXT_CONFIG, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2_5_VLConfig(text_config=dict(text, initializer_range=TINY_INIT_STD),
                            vision_config=dict(TINY_VISION_CONFIG, initializer_range=TINY_INIT_STD),
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                            initializer_range=TINY_INIT_STD,
                            # untied: the output layer can be trained fully (modules_to_save) on its own
                            tie_word_embeddings=False)


def tiny_recipe(seed: int) -> dict:
    """Everything the tiny model's weights depend on (a changed recipe rebuilds the cached folder)."""
    return {"seed": seed, "text": TINY_TEXT_CONFIG, "vision": TINY_VISION_CONFIG, "pixels": TINY_IMAGE_PIXELS,
            "init_std": TINY_INIT_STD}


def build_tiny_vision_model(seed: int = 0):
    """A seeded, randomly initialised toy Qwen2.5-VL and its processor (nothing downloaded)."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tiny_vision_tokenizer()
    config = tiny_vision_config(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(**TINY_IMAGE_PIXELS)
    return model, ImageTextProcessor(image_processor, tokenizer, QWEN_VL_CHAT_TEMPLATE)


def tiny_vision_dir() -> Path:
    return models_dir() / TINY_VISION_NAME


def ensure_tiny_vision_model(seed: int = 0) -> Path:
    """Build the toy model once into $LAB_MODELS_DIR/tiny-qwen2.5-vl/ (safetensors); return the folder.

    A folder built from another recipe (an older lab version) is rebuilt, never silently reused.
    """
    target = tiny_vision_dir()
    recipe_file = target / TINY_RECIPE_FILE
    with build_lock(target):
        files_present = all((target / name).exists()
                            for name in ("model.safetensors", "tokenizer_config.json", PROCESSOR_MARKER))
        if files_present and recipe_file.exists() and json.loads(recipe_file.read_text()) == tiny_recipe(seed):
            return target
        log.warning("building the tiny random Qwen2.5-VL into %s (once, seconds)", target)
        model, processor = build_tiny_vision_model(seed)
        save_model_folder(model, processor, target)
        recipe_file.write_text(json.dumps(tiny_recipe(seed), indent=2))  # last: a folder without it is rebuilt
    return target


def load_vision_model(name: str = TINY_VISION_NAME, backend=None, load_in_4bit: bool = False,
                      max_seq_length: int = 2048, gradient_checkpointing: bool = True, trust_remote_code: bool = False):
    """(model, processor) for a registry name, folder or hub id, on the chosen backend (trust_remote_code:
    run Python code the model's repository ships; off unless the run's knob says so)."""
    from lab_utils.models.registry import resolve_model

    backend = backend or get_backend()
    source = resolve_model(name)
    if backend.is_unsloth:
        return load_vision_model_unsloth(source, load_in_4bit, max_seq_length, gradient_checkpointing,
                                         trust_remote_code)
    return load_vision_model_hf(source, backend.device, load_in_4bit, trust_remote_code)


def load_vision_model_hf(source: str, device: str = "cpu", load_in_4bit: bool = False, trust_remote_code: bool = False):
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        if device != "cuda":
            raise MachineError("load_in_4bit needs a CUDA GPU (bitsandbytes); on CPU set load_in_4bit=False")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16,
                                                           bnb_4bit_quant_type="nf4")
        kwargs["device_map"] = {"": 0}
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if not load_in_4bit:
        model = model.to(device)
    return model, load_vision_processor(source, trust_remote_code)


def load_vision_model_unsloth(source: str, load_in_4bit: bool = False, max_seq_length: int = 2048,
                              gradient_checkpointing: bool = True, trust_remote_code: bool = False):
    """Unsloth's FastVisionModel (GPU only; import_unsloth says so clearly on CPU)."""
    import_unsloth()
    from unsloth import FastVisionModel

    model, processor = FastVisionModel.from_pretrained(
        source,
        load_in_4bit=load_in_4bit,
        max_seq_length=max_seq_length,
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        trust_remote_code=trust_remote_code,
    )
    return model, processor
