"""Read a saved peft LoRA adapter as plain matrices: config, scale, and (A, B) per module.

A run of scripts/sft_alpaca.py leaves $LAB_OUTPUT_DIR/sft_alpaca/<run_name>/adapter/
with adapter_config.json (r, lora_alpha, use_rslora, target_modules) and
adapter_model.safetensors holding, for every adapted linear layer,

    base_model.model.<module>.lora_A.weight   (r x d_in)
    base_model.model.<module>.lora_B.weight   (d_out x r)

`read_lora_adapter` pairs them by module so lab_utils.teaching.lowrank can study
dW = scale * B @ A without loading the base model at all.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lab_utils.teaching.lowrank import lora_scale
from lab_utils.core.paths import COMPLETE_MARKER, LabPathError, is_complete, output_dir
from lab_utils.core.errors import DataError, ParamError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SFT_EXPERIMENT = "sft_alpaca"
# "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" -> module, "A"
LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraAdapter:
    folder: Path
    config: dict
    scale: float  # alpha / r (alpha / sqrt(r) with rsLoRA)
    modules: dict  # module name -> (A (r x d_in), B (d_out x r)) as float32 arrays

    @property
    def rank(self) -> int:
        return int(self.config["r"])


def adapter_folder_problem(path) -> str | None:
    """Why `path` is not a usable LoRA adapter folder (config + safetensors weights), or None when it is.

    The one rule every reader of adapters (export, the LoRA lesson, evaluation) applies.
    """
    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file():
        return f"no LoRA adapter in '{path}': expected {path / ADAPTER_CONFIG} (saved by peft save_pretrained)"
    if not (path / ADAPTER_WEIGHTS).is_file():
        return f"adapter '{path}' has a config but no weights ({ADAPTER_WEIGHTS})"
    return None


def is_adapter_folder(path) -> bool:
    return adapter_folder_problem(path) is None


def finished_sft_runs(root=None) -> list[Path]:
    """Finished sft_alpaca runs that saved an adapter, oldest first (by when they finished: the marker's time)."""
    base = output_dir(root) / SFT_EXPERIMENT
    runs = [r for r in base.glob("*") if is_complete(r) and is_adapter_folder(r / "adapter")] if base.is_dir() else []
    return sorted(runs, key=lambda r: (r / COMPLETE_MARKER).stat().st_mtime)


def find_adapter(adapter_run: str = "", root=None) -> Path | None:
    """The adapter folder for a run name, a path (run dir or adapter dir), or "" = the newest finished run.

    Returns None when "" is given and no finished run exists (the caller may train one);
    a name or path that leads to no adapter is a clear error.
    """
    if not adapter_run:
        runs = finished_sft_runs(root)
        return runs[-1] / "adapter" if runs else None
    candidates = [Path(adapter_run).expanduser(), output_dir(root) / SFT_EXPERIMENT / adapter_run]
    for path in candidates:
        for folder in (path, path / "adapter"):
            if is_adapter_folder(folder):
                return folder.resolve()
    raise LabPathError(
        f"no LoRA adapter at '{adapter_run}' (looked for {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS} in "
        f"{', '.join(str(c) for c in candidates)} and their adapter/ folders). "
        f"Give a run name under $LAB_OUTPUT_DIR/{SFT_EXPERIMENT}/ (now: {output_dir(root)}) or a path."
    )


def base_model_name(adapter_folder, default: str) -> str:
    """The `model` the run was trained from (its params.json), portable across machines; else `default`."""
    params = Path(adapter_folder).parent / "params.json"
    if params.is_file():
        return json.loads(params.read_text()).get("model") or default
    return default


def read_lora_adapter(folder) -> LoraAdapter:
    """Config, scale and the (A, B) pair of every adapted module, in the file's module order."""
    from safetensors import safe_open

    folder = Path(folder)
    if not is_adapter_folder(folder):
        raise LabPathError(f"'{folder}' is not a LoRA adapter folder (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise DataError(f"{folder / ADAPTER_CONFIG}: peft_type is {config.get('peft_type')!r}, expected 'LORA'")
    halves: dict = {}
    # framework="pt": bf16 adapters exist and numpy has no bf16; float() makes every dtype readable
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as weights:
        for key in weights.keys():
            match = LORA_KEY.match(key)
            if match:
                halves.setdefault(match["module"], {})[match["side"]] = weights.get_tensor(key).float().numpy()
    unpaired = sorted(m for m, h in halves.items() if set(h) != {"A", "B"})
    if unpaired:
        raise DataError(f"{folder / ADAPTER_WEIGHTS}: lora_A without lora_B (or the reverse) for {unpaired[:3]}")
    modules = {m: (h["A"], h["B"]) for m, h in halves.items()}
    scale = lora_scale(config["lora_alpha"], config["r"], config.get("use_rslora", False))
    return LoraAdapter(folder, config, scale, modules)


def module_kind(module: str) -> str:
    """'model.layers.3.self_attn.q_proj' -> 'q_proj'."""
    return module.rsplit(".", 1)[-1]


def layer_index(module: str) -> int:
    """'model.layers.3.self_attn.q_proj' -> 3 (-1 where the name has no layer number)."""
    match = re.search(r"\.layers\.(\d+)\.", f".{module}.")
    return int(match.group(1)) if match else -1



def check_adapter_base(folder, model: str) -> None:
    """A clear error when the adapter was trained on another base model than `model`."""
    from lab_utils.models.registry import resolve_model

    trained_on = base_model_name(folder, default="")
    if not trained_on:  # a bare adapter folder: its config names the base (a hub id or a local path)
        trained_on = json.loads((Path(folder) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path") or ""
    if trained_on and trained_on != model and str(trained_on) != str(resolve_model(model)):
        raise ParamError(f"adapter {folder} was trained on {trained_on!r}, but this run's model is {model!r}; "
                         f"set model: {trained_on} (or start from an adapter of {model})")


def start_from_adapter(model, init_from: str, model_name: str):
    """Swap the fresh LoRA of `model` (a peft model) for the saved adapter of a finished run, trainable.

    `init_from` is a run name under $LAB_OUTPUT_DIR/sft_alpaca/, a run folder or an adapter folder.
    The adapter's own r/alpha/targets replace the run's LoRA fields.
    """
    from peft import PeftModel

    folder = find_adapter(init_from)
    check_adapter_base(folder, model_name)
    base = model.unload()  # drops the fresh LoRA layers without merging them: the plain base model
    print(f"[lab] starting from the adapter in {folder}")
    return PeftModel.from_pretrained(base, str(folder), is_trainable=True)
