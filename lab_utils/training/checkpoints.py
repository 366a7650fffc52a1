"""Which Trainer checkpoint a run resumes from: the newest one that is whole.

A kill or a full disk during a save leaves the newest checkpoint-N folder half written
(a safetensors file cut short, an empty optimizer.pt, no trainer_state.json yet), and
transformers' get_last_checkpoint would hand exactly that one to trainer.train(), which
then dies deep inside safetensors or torch.load. Here every candidate is checked, newest
first, by reading only what proves it complete, never the tensors themselves:

    *.safetensors      the 8-byte header length, the JSON header, and a file long enough
                       for the last tensor's data offsets
    *.json             parses (trainer_state.json, which Trainer writes last, must exist)
    optimizer.pt,      present (else Trainer would silently resume with a fresh optimizer)
    scheduler.pt       and a whole zip archive: torch.save writes a zip whose central
                       directory sits at the very end, so a cut-short file has none
    other *.pt/*.pth   (rng state, scaler) whole zip archives where present

DeepSpeed and FSDP keep the optimizer in their own layout (a `latest` file and
global_step* folders; optimizer_0/ or optimizer*.bin): there those stand in for optimizer.pt.
"""

import json
import re
import struct
import zipfile
from pathlib import Path

from lab_utils.core.errors import LabError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


class CheckpointError(LabError, RuntimeError):
    """Checkpoints exist, but none can be resumed from; the message says what to do."""


def candidates(folder: Path) -> list[Path]:
    """checkpoint-N folders, newest (highest N) first."""
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name)[1]), reverse=True)


def safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is {size} bytes, shorter than its header length field"
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            return f"{path.name} is cut short ({size} bytes; its header alone claims {header_len})"
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{path.name} has an unreadable header"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    needed = 8 + header_len + max(ends, default=0)
    return f"{path.name} is cut short ({size} bytes of {needed})" if size < needed else None


def torch_file_problem(path: Path) -> str | None:
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            last = max((i.header_offset + i.compress_size for i in archive.infolist()), default=0)
    except (zipfile.BadZipFile, OSError):
        return f"{path.name} is cut short or damaged ({size} bytes, no whole torch archive)"
    return f"{path.name} is cut short ({size} bytes of {last})" if size < last else None


def json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{path.name} does not parse ({'empty' if path.stat().st_size == 0 else err})"
    return None


def has_own_optimizer_layout(folder: Path) -> bool:
    """DeepSpeed (`latest` + global_step*/) or FSDP through accelerate (optimizer_0/ sharded, optimizer*.bin
    full or per rank) keep the optimizer (and DeepSpeed the scheduler) in their own files."""
    return ((folder / "latest").is_file() or any(folder.glob("global_step*")) or (folder / "optimizer_0").is_dir()
            or any(folder.glob("optimizer*.bin")))


def checkpoint_problem(folder) -> str | None:
    """Why this checkpoint cannot be resumed from, or None when it is whole."""
    folder = Path(folder)
    required = ["trainer_state.json"]
    if not has_own_optimizer_layout(folder):
        required += ["optimizer.pt", "scheduler.pt"]
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing (the save did not finish)"
    if not any((folder / name).is_file() for name in WEIGHTS) and not has_own_optimizer_layout(folder):
        return f"no model weights ({' or '.join(WEIGHTS)})"
    checks = {".safetensors": safetensors_problem, ".json": json_problem, ".pt": torch_file_problem,
              ".pth": torch_file_problem}
    for path in sorted(folder.iterdir()):
        check = checks.get(path.suffix) if path.is_file() else None
        if check and (problem := check(path)):
            return problem
    return None


def newest_whole_checkpoint(folder) -> str | None:
    """The newest whole checkpoint-N under `folder` (a Trainer's output_dir), skipping damaged ones with a line each.

    None when there is no checkpoint at all (a fresh run). When there are some but none is
    whole, a CheckpointError: training from scratch into that folder would mix the runs.
    """
    folder = Path(folder)
    found = candidates(folder) if folder.is_dir() else []
    for checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        print(f"[lab] skipping damaged checkpoint {checkpoint}: {problem}")
    if found:
        raise CheckpointError(f"no whole checkpoint to resume from in {folder} ({len(found)} damaged); "
                              "pass overwrite: true to start this run again from scratch")
    return None
