"""Real model shapes with random weights: speed and memory checks on a GPU box without network.

A speed or memory number does not depend on what the weights have learned, so the GPU checks
(scripts/verify_gpu.py) and the benchmarks (benchmarks/) build each model from the published
shape of its config.json (hidden size, layers, heads, kv heads, MLP width, vocabulary, RoPE
base, tied embeddings) with random weights, save it once under
$LAB_MODELS_DIR/bench-random/<name>/, and load it from that folder like any checkpoint: both
backends read the same files.

Tokenizer. Every model gets the embedded SmolLM2 tokenizer (49,152 ids) or the one given. The
embedding keeps the model's *real* vocabulary size (151,936 for Qwen2.5-0.5B), because the
embedding and the output projection are a large share of the memory and time being measured;
the tokenizer's ids are all below it, so no id needs mapping and the extra rows are simply
never looked up.
"""

import json
from pathlib import Path

from lab_utils.core.machine import has_package, run_isolated
from lab_utils.core.paths import build_lock, models_dir
from lab_utils.models.registry import resolve_model, save_model_folder

# Shapes from the published config.json files (Hugging Face, 2024-09 releases).
MODEL_CONFIGS = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, rope_theta=1000000.0,
                         tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, vocab_size=151936, rope_theta=1000000.0,
                         tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, intermediate_size=18944, vocab_size=152064, rope_theta=1000000.0,
                       tie_word_embeddings=False, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "llama3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                        rope_theta=500000.0, tie_word_embeddings=True, max_position_embeddings=131072,
                        rms_norm_eps=1e-5,
                        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    # config.json of Qwen/Qwen3-0.6B (2025-04); the chat template is Qwen3's own (with the thinking switch)
    "qwen3-0.6b": dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
                       rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=40960,
                       rms_norm_eps=1e-6),
    # --smoke: a 2-layer Llama with the same code path, small enough for a CPU test; two 32-wide heads
    # because vLLM's CPU attention takes head sizes from 32 up (its rollouts and server run on it too)
    "smoke-llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, intermediate_size=128, vocab_size=49152, rope_theta=10000.0,
                        tie_word_embeddings=True, max_position_embeddings=2048, rms_norm_eps=1e-5),
}
GPU_MODELS = ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "llama3.2-1b"]
# Vision-language shapes (config.json of unsloth/Qwen2.5-VL-3B-Instruct, 2025-01): text tower + vision tower.
VISION_CONFIGS = {
    "qwen2.5-vl-3b": dict(
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                    fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", in_channels=3),
        tie_word_embeddings=True),
}
# config.json of Qwen/Qwen3-VL-2B-Instruct (2025-10): 16-px patches, DeepStack, interleaved M-RoPE
VISION_CONFIGS["qwen3-vl-2b"] = dict(
    family="tiny-qwen3-vl",  # config/model classes, chat template and image processor of that family
    text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
              num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144, rms_norm_eps=1e-6,
              rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                               "mrope_interleaved": True}),
    vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048, patch_size=16,
                spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh", in_channels=3),
    tie_word_embeddings=True)
SMOKE_MODEL = "smoke-llama"


def random_model_dir(name: str) -> Path:
    return models_dir() / "bench-random" / name


def model_config(name: str, **special_token_ids):
    """A transformers config with `name`'s published shape."""
    from transformers import AutoConfig

    shape = dict(MODEL_CONFIGS[name])
    return AutoConfig.for_model(shape.pop("model_type"), **shape, **special_token_ids)


def build_random_model(name: str, tokenizer_source: str | None = None, seed: int = 0) -> str:
    """Save `name`'s shape with random bf16 weights (fp32 for the smoke model) once; return the folder."""
    target = random_model_dir(name)
    if is_built(name):
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM

    from lab_utils.models.registry import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_source or resolve_model("smollm2-135m"))
    if len(tokenizer) > MODEL_CONFIGS[name]["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids but {name} only {MODEL_CONFIGS[name]['vocab_size']}")
    if MODEL_CONFIGS[name]["model_type"] == "qwen3":  # its own template: the thinking switch must be there
        from lab_utils.models.chat import trl_chat_template

        tokenizer.chat_template = trl_chat_template("qwen3.jinja")
    config = model_config(name, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    smoke = name == SMOKE_MODEL
    torch.manual_seed(seed)
    # initialise on the GPU: a 7B model's random init takes minutes on a CPU
    with torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if smoke else torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return str(save_model_folder(model, tokenizer, target))


def vision_family(name: str):
    """The lab's tiny model of the same family (its config/model classes, chat template, image processor)."""
    from lab_utils.vision.model import TINY_VISION_NAME

    return VISION_CONFIGS[name].get("family", TINY_VISION_NAME)


def vision_model_config(name: str, tokenizer):
    """A Qwen2.5-VL or Qwen3-VL config with `name`'s published shape and `tokenizer`'s vision token ids."""
    import transformers

    from lab_utils.vision.model import tiny_family
    from lab_utils.vision.processor import VISION_SPECIAL_TOKENS

    shape = VISION_CONFIGS[name]
    config_class = getattr(transformers, tiny_family(vision_family(name)).config_class)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VISION_SPECIAL_TOKENS}
    text = dict(shape["text"], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    return config_class(text_config=text, vision_config=dict(shape["vision"]),
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                            tie_word_embeddings=shape["tie_word_embeddings"])


def vision_processor(tokenizer, name: str = "qwen2.5-vl-3b"):
    """The stock Qwen2.5-VL / Qwen3-VL processor where torchvision imports (Unsloth's FastVisionModel loads it
    with AutoProcessor), else the lab's image-only one (lab_utils.vision.processor.ImageTextProcessor)."""
    from lab_utils.vision.model import TINY_IMAGE_PIXELS, TINY_VISION_NAME, tiny_family
    from lab_utils.vision.processor import QWEN_VL_CHAT_TEMPLATE, ImageTextProcessor

    if vision_family(name) != TINY_VISION_NAME:  # Qwen3-VL: 16-px patches, its own template
        family = tiny_family(vision_family(name))
        pixels = dict(family.pixels, patch_size=16, merge_size=2, temporal_patch_size=2)
        if has_package("torchvision"):
            from transformers import Qwen3VLProcessor
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
            from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

            return Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                    video_processor=Qwen3VLVideoProcessor(), chat_template=tokenizer.chat_template)
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return ImageTextProcessor(Qwen2VLImageProcessorPil(**pixels), tokenizer, tokenizer.chat_template)
    if has_package("torchvision"):
        from transformers import Qwen2_5_VLProcessor
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**TINY_IMAGE_PIXELS), tokenizer=tokenizer,
                                   video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_VL_CHAT_TEMPLATE)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return ImageTextProcessor(Qwen2VLImageProcessorPil(**TINY_IMAGE_PIXELS), tokenizer, QWEN_VL_CHAT_TEMPLATE)


def build_random_vision_model(name: str, seed: int = 0) -> str:
    """Save `name`'s Qwen2.5-VL / Qwen3-VL shape with random bf16 weights once (the embedded tokenizer +
    vision tokens)."""
    target = random_model_dir(name)
    if is_built(name):
        return str(target)
    import torch
    import transformers

    from lab_utils.vision.model import tiny_family, tiny_vision_tokenizer

    tokenizer = tiny_vision_tokenizer(vision_family(name))
    config = vision_model_config(name, tokenizer)
    model_class = getattr(transformers, tiny_family(vision_family(name)).model_class)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = model_class._from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return str(save_model_folder(model, vision_processor(tokenizer, name), target))


# the keys that set the tensors' shapes (config.json keeps others, e.g. rope_theta, under other names)
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings")


def is_built(name: str) -> bool:
    """Is `name`'s folder whole (tokenizer written last) and of `name`'s shape now? A folder built by an older lab
    with another shape (the smoke model's heads widened for vLLM) is rebuilt instead of silently reused."""
    folder = random_model_dir(name)
    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    shape = MODEL_CONFIGS.get(name, {})
    return (folder / "tokenizer_config.json").exists() and \
        all(saved.get(key) == shape[key] for key in SHAPE_KEYS if key in shape)


def _ensure_built(name: str, builder: str, payload: dict) -> str:
    """`name`'s folder, built once by `builder` in a child process (keeps this process free of a CUDA context);
    two processes asking at once (test workers, DDP ranks) build it once: the second waits, then finds it."""
    target = random_model_dir(name)
    if is_built(name):
        return str(target)
    with build_lock(target):
        if is_built(name):
            return str(target)
        result = run_isolated("lab_utils.models.random_models", builder, payload)
    if result["status"] != "ok":
        raise RuntimeError(f"building the random {name} failed: {result['status']}")
    return result["value"]


def ensure_random_vision_model(name: str) -> str:
    return _ensure_built(name, "build_random_vision_model", {"name": name})


def ensure_random_model(name: str, tokenizer_source: str | None = None) -> str:
    return _ensure_built(name, "build_random_model", {"name": name, "tokenizer_source": tokenizer_source})


def model_folder(name: str, tokenizer_source: str | None = None) -> str:
    """A random real-shape model's folder (a MODEL_CONFIGS name, built once) or a real model's (any name
    resolve_model takes: a registry name, a folder, a hub id)."""
    if name in MODEL_CONFIGS:
        return ensure_random_model(name, tokenizer_source)
    return str(resolve_model(name))
