"""Qwen2.5-VL and Qwen3-VL models for the lab: the tiny random CPU models built in code, and loading on either backend.

    CPU / hf        a real Qwen2.5-VL (`tiny-qwen2.5-vl`) or Qwen3-VL (`tiny-qwen3-vl`) architecture at
                    toy size, randomly initialised from a seeded config (built once into
                    $LAB_MODELS_DIR/<name>/ as safetensors), the SmolLM2 tokenizer plus the Qwen vision
                    special tokens and a chat template, and the image-only processor of
                    lab_utils.vision.processor (the Qwen2-VL PIL image processor serves both families:
                    transformers maps qwen3_vl to it, with 16-px patches instead of 14).
    GPU / unsloth   `FastVisionModel.from_pretrained`, any Qwen2.5-VL or Qwen3-VL id (4-bit optional).

Qwen3-VL differs where the tiny model has to follow it: 16-px patches (32-px merged tokens),
a learnt position embedding of the vision tower (num_position_embeddings, a square grid),
DeepStack (features of the vision blocks in deepstack_visual_indexes are added into the
first text layers) and interleaved M-RoPE (mrope_interleaved; the sections still sum to head_dim/2).
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lab_utils.core.backend import get_backend, import_unsloth
from lab_utils.core.distributed import model_device_map
from lab_utils.models.registry import save_model_folder
from lab_utils.core.paths import build_lock, models_dir
from lab_utils.vision.processor import (PROCESSOR_MARKER, QWEN_VL_CHAT_TEMPLATE, VISION_SPECIAL_TOKENS,
                                        ImageTextProcessor, load_vision_processor)
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
# The same toy at Qwen3-VL's shape (transformers' Qwen3VLConfig; the published Qwen3-VL-2B-Instruct has
# 16-px patches, merge 2, 2304 position embeddings, deepstack_visual_indexes [5, 11, 17] of 24 blocks,
# mrope_section [24, 20, 20] interleaved for head_dim 128): head_dim 16 -> mrope_section [2, 3, 3];
# 256 = 16x16 position embeddings; DeepStack from the first of the 2 vision blocks.
TINY_QWEN3_TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                              rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                               "mrope_section": [2, 3, 3], "mrope_interleaved": True})
TINY_QWEN3_VISION_CONFIG = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                                num_position_embeddings=256, deepstack_visual_indexes=[0],
                                hidden_act="gelu_pytorch_tanh")
# 32-px merged patches: a 64x64 picture is 4 image tokens, a 448x448 one 196.
TINY_QWEN3_IMAGE_PIXELS = dict(min_pixels=64 * 64, max_pixels=512 * 512)


@dataclass(frozen=True)
class TinyFamily:
    config_class: str  # in transformers
    model_class: str
    text: dict
    vision: dict
    pixels: dict
    chat_template: str = ""  # "": the lab's reduced Qwen-VL template; else an upstream one TRL ships


TINY_FAMILIES = {
    TINY_VISION_NAME: TinyFamily("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", TINY_TEXT_CONFIG,
                                 TINY_VISION_CONFIG, TINY_IMAGE_PIXELS),
    # Qwen3-VL-Instruct's own chat template, as TRL ships it (trl/chat_templates/qwen3_vl.jinja, "Original
    # Qwen3-VL chat template"; the same file is tests/data/templates/qwen3-vl.jinja)
    "tiny-qwen3-vl": TinyFamily("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", TINY_QWEN3_TEXT_CONFIG,
                                TINY_QWEN3_VISION_CONFIG, TINY_QWEN3_IMAGE_PIXELS, chat_template="qwen3_vl.jinja"),
}
# Weights drawn with std 1/sqrt(width) instead of the usual 0.02, which is tuned for layers
# hundreds of units wide: at width 64 and 0.02 each layer's output is a few percent of its
# input, the picture barely reaches the answer position, and nothing learns in minutes.
TINY_INIT_STD = 0.125


def tiny_family(name: str) -> TinyFamily:
    if name not in TINY_FAMILIES:
        raise ValueError(f"no tiny vision model named {name!r}; known: {', '.join(TINY_FAMILIES)}")
    return TINY_FAMILIES[name]


def tiny_chat_template(family: TinyFamily) -> str:
    from lab_utils.models.chat import trl_chat_template

    return trl_chat_template(family.chat_template) if family.chat_template else QWEN_VL_CHAT_TEMPLATE


def tiny_vision_tokenizer(name: str = TINY_VISION_NAME):
    """The embedded SmolLM2 tokenizer, plus the Qwen vision tokens and the family's chat template."""
    from lab_utils.models.registry import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_SPECIAL_TOKENS})
    tokenizer.chat_template = tiny_chat_template(tiny_family(name))
    return tokenizer


def tiny_vision_config(tokenizer, name: str = TINY_VISION_NAME):
    import transformers

    family = tiny_family(name)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VISION_SPECIAL_TOKENS}
    text = dict(family.text, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return getattr(transformers, family.config_class)(
                            text_config=dict(text, initializer_range=TINY_INIT_STD),
                            vision_config=dict(family.vision, initializer_range=TINY_INIT_STD),
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                            initializer_range=TINY_INIT_STD,
                            # untied: the output layer can be trained fully (modules_to_save) on its own
                            tie_word_embeddings=False)


def tiny_recipe(seed: int, name: str = TINY_VISION_NAME) -> dict:
    """Everything the tiny model's weights depend on (a changed recipe rebuilds the cached folder)."""
    family = tiny_family(name)
    recipe = {"seed": seed, "text": family.text, "vision": family.vision, "pixels": family.pixels,
              "init_std": TINY_INIT_STD}
    return recipe if name == TINY_VISION_NAME else {"family": name, **recipe}


def build_tiny_vision_model(seed: int = 0, name: str = TINY_VISION_NAME):
    """A seeded, randomly initialised toy Qwen2.5-VL or Qwen3-VL and its processor (nothing downloaded)."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    family = tiny_family(name)
    tokenizer = tiny_vision_tokenizer(name)
    config = tiny_vision_config(tokenizer, name)
    torch.manual_seed(seed)
    model = getattr(transformers, family.model_class)(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(**family.pixels, patch_size=family.vision["patch_size"],
                                               merge_size=family.vision["spatial_merge_size"],
                                               temporal_patch_size=family.vision["temporal_patch_size"])
    return model, ImageTextProcessor(image_processor, tokenizer, tokenizer.chat_template)


def tiny_vision_dir(name: str = TINY_VISION_NAME) -> Path:
    return models_dir() / name


def ensure_tiny_vision_model(seed: int = 0, name: str = TINY_VISION_NAME) -> Path:
    """Build a toy model once into $LAB_MODELS_DIR/<name>/ (safetensors); return the folder.

    A folder built from another recipe (an older lab version) is rebuilt, never silently reused.
    """
    tiny_family(name)
    target = tiny_vision_dir(name) if name != TINY_VISION_NAME else tiny_vision_dir()
    recipe_file = target / TINY_RECIPE_FILE
    with build_lock(target):
        files_present = all((target / file).exists()
                            for file in ("model.safetensors", "tokenizer_config.json", PROCESSOR_MARKER))
        if files_present and recipe_file.exists() and json.loads(recipe_file.read_text()) == tiny_recipe(seed, name):
            return target
        log.warning("building the tiny random %s into %s (once, seconds)", name, target)
        model, processor = build_tiny_vision_model(seed, name)
        save_model_folder(model, processor, target)
        recipe_file.write_text(json.dumps(tiny_recipe(seed, name), indent=2))  # last: a folder without it is rebuilt
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
        kwargs["device_map"] = model_device_map(device)  # this rank's GPU (DDP), not GPU 0 for every rank
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if not load_in_4bit and model_device_map(device):
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
