"""Export what a run trained: merged 16-bit safetensors, GGUF files, an Ollama Modelfile, a hub upload.

    merge_adapter(run_dir, out)          LoRA adapter merged into its base (peft merge_and_unload);
                                         text or vision-language
    locate_adapter(run_dir)              adapter folder, base model and system prompt of a finished run
    convert_to_gguf(merged, out.gguf)    f32 / f16 / bf16 / q8_0 with llama.cpp's own convert_hf_to_gguf.py
    quantize_gguf(f16.gguf, out.gguf)    k-quants (q4_k_m, ...) with llama.cpp's quantizer
    write_modelfile(gguf, tokenizer)     `ollama create NAME -f Modelfile` next to the GGUF
    push_to_hub(folder, repo_id)         huggingface_hub upload_folder; dry run by default

Where llama.cpp comes from: no git clone, no compiler. The llama-cpp-python
source distribution on PyPI vendors llama.cpp, converter and gguf-py included,
so `ensure_llama_cpp` fetches that sdist once with pip (the package registry is
the one network source the lab allows) and keeps the Python parts under
$LAB_MODELS_DIR/llama.cpp-<version>/. The converter runs as a subprocess of this
interpreter with its own vendored gguf-py first on sys.path (the script does that
itself), so the installed `gguf` package's version does not matter. It needs
torch, transformers, numpy and sentencepiece (its Llama-family vocab code imports
sentencepiece even for BPE tokenizers).

The k-quants need llama.cpp's C++ quantizer: `llama-quantize` on PATH, or the
`llama_model_quantize` API of an installed llama-cpp-python. Neither is required
for merged / f16 / bf16 / q8_0.

Why not Unsloth's `save_pretrained_gguf` on a GPU box: unsloth_zoo's
install_llama_cpp uses ./llama.cpp only when a working `llama-quantize` binary
sits in it; otherwise it runs apt-get and git clone, which the lent GPU boxes
(no network) and a careful user do not want. Merging with peft is fast on any
device and the converter below is the same code Unsloth would call, so one path
serves CPU and GPU.

Everything is written to `<target>.partial` first and renamed at the end: a
crashed export never looks finished, and nothing that exists is replaced unless
`overwrite=True`.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from lab_utils.export.adapters import ADAPTER_CONFIG, adapter_folder_problem
from lab_utils.core.paths import COMPLETE_MARKER, is_complete, write_then_rename
from lab_utils.core.errors import LabError


MERGE_DTYPES = ("float16", "bfloat16", "float32")


class ExportError(LabError, RuntimeError):
    """An export that cannot proceed; the message says what is wrong and what to do."""


# Where the adapter is, what it was trained on
@dataclass(frozen=True)
class TrainedAdapter:
    adapter_dir: Path
    base_model: str  # registry name, folder or hub id (lab_utils.models.registry.resolve_model takes it)
    system_prompt: str | None
    run_dir: Path | None  # None for a bare adapter folder


def _read_run_params(run_dir: Path) -> dict:
    params_file = run_dir / "params.json"
    if not params_file.exists():
        return {}
    return json.loads(params_file.read_text(encoding="utf-8"))


def locate_adapter(run_dir_or_adapter, base_model: str | None = None) -> TrainedAdapter:
    """A finished SFT run dir (holding adapter/ and params.json), or a bare peft adapter folder.

    A run dir must be complete (run_complete.json written last), else its adapter may be
    half-written. The base model comes from `base_model`, else the run's params.json
    `model`, else the adapter's own adapter_config.json.
    """
    path = Path(run_dir_or_adapter).expanduser().resolve()
    if not path.exists():
        raise ExportError(f"nothing to export: '{path}' does not exist (pass a finished run dir or an adapter folder)")
    # the user named the adapter folder; inside a run dir, that run must be finished too
    if (path / ADAPTER_CONFIG).exists():
        adapter = path
        looks_like_run = (path.parent / "params.json").exists() or is_complete(path.parent)
        run = path.parent if looks_like_run else None
    else:
        adapter, run = path / "adapter", path
    if run is not None and not is_complete(run) and (adapter.exists() or (run / "params.json").exists()):
        raise ExportError(
            f"run '{run}' is not finished (no {COMPLETE_MARKER}): its adapter may be half-written; "
            "let training finish or resume it first"
        )
    problem = adapter_folder_problem(adapter)
    if problem:
        raise ExportError(problem)
    params = _read_run_params(run) if run else {}
    adapter_config = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = base_model or params.get("model") or adapter_config.get("base_model_name_or_path")
    if not base:
        raise ExportError(f"adapter '{adapter}' does not say which base model it was trained on; pass base_model=")
    return TrainedAdapter(adapter, base, params.get("system_prompt") or None, run)


# Merged 16-bit safetensors (text and vision-language models)
def merge_adapter(run_dir_or_adapter, out_dir, dtype: str = "float16", overwrite: bool = False,
                  base_model: str | None = None) -> Path:
    """Merge the LoRA adapter into its base and save safetensors + tokenizer (or processor) + chat template.

    The merge itself runs in float32 (W + scale * B @ A without 16-bit rounding of the
    sum) and the result is cast to `dtype` once. That costs 4 bytes per parameter of RAM:
    ~0.5 GB for 135M, ~28 GB for 7B. A QLoRA adapter merges into the 16-bit base this way too
    (merging into 4-bit weights would round the update away). A vision-language base
    (its config has a vision_config, e.g. Qwen2.5-VL) is loaded as image-text-to-text and
    saved with its image processor, so the merged folder loads like the base did.
    """
    import torch
    from peft import PeftModel

    from lab_utils.models.registry import repair_byte_level_bpe, resolve_model

    if dtype not in MERGE_DTYPES:
        raise ExportError(f"dtype={dtype!r}: expected one of {MERGE_DTYPES}")
    trained = locate_adapter(run_dir_or_adapter, base_model)
    source = resolve_model(trained.base_model)
    vision = is_vision_language(source)
    with write_then_rename(out_dir, overwrite, exists_error=ExportError) as staging:
        base = _model_class(vision).from_pretrained(source, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, str(trained.adapter_dir)).merge_and_unload()
        merged = merged.to(getattr(torch, dtype))
        merged.config.dtype = getattr(torch, dtype)  # what the saved config.json declares
        merged.save_pretrained(staging, safe_serialization=True)
        # The training run saved its tokenizer/processor (pad token, chat template) beside the adapter.
        saved_beside = (trained.adapter_dir / "tokenizer_config.json").exists()
        preprocessor_source = str(trained.adapter_dir) if saved_beside else source
        _load_preprocessor(preprocessor_source, vision).save_pretrained(staging)
        # A run trained before the embedded cache's version 2 saved the unrepaired tokenizer beside its adapter.
        repair_byte_level_bpe(staging / "tokenizer.json")
    return Path(out_dir)


def is_vision_language(source: str) -> bool:
    """A model folder or hub id whose config has a vision tower (Qwen2-VL, Qwen2.5-VL, ...)."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(source), "vision_config", None) is not None


def _model_class(vision: bool):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if vision else AutoModelForCausalLM


def _load_preprocessor(source: str, vision: bool):
    """The tokenizer, or for a vision-language model the processor (tokenizer + image processor)."""
    if vision:
        # the lab's one way to load a vision processor (the image-only one where torchvision is missing)
        from lab_utils.vision.processor import load_vision_processor

        return load_vision_processor(source)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)
