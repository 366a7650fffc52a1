"""Every directory the lab touches, resolved in one place.

Order for each: an explicit argument, else the environment variable, else a
default under the repository. The env/*.env profiles set the variables per
platform (AutoDL keeps big files on its data disk, Colab on Drive), so no
code, config or notebook ever holds an absolute path.

    LAB_HOME        the repository (default: the folder holding lab_utils/)
    LAB_MODELS_DIR  converted/cached model weights      (default: $LAB_HOME/models)
    LAB_DATA_DIR    datasets too big to bundle          (default: $LAB_HOME/data)
    LAB_OUTPUT_DIR  one folder per run                  (default: $LAB_HOME/outputs)
"""

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from lab_utils.core.errors import LabError, RunExistsError

REPO_ROOT = Path(__file__).resolve().parents[2]  # lab_utils/core/paths.py -> the repository
SAMPLES_DIR = REPO_ROOT / "data" / "samples"  # small files we wrote ourselves, always present
COMPLETE_MARKER = "run_complete.json"  # written last; a run dir without it is unfinished


class LabPathError(LabError, FileNotFoundError):
    """A file or folder the user pointed at is missing; the message says what to set."""


def _resolve(explicit, env_var: str, default: Path) -> Path:
    value = explicit or os.environ.get(env_var) or default
    return Path(os.path.expandvars(str(value))).expanduser().resolve()


def lab_home(explicit=None) -> Path:
    return _resolve(explicit, "LAB_HOME", REPO_ROOT)


def models_dir(explicit=None) -> Path:
    return _resolve(explicit, "LAB_MODELS_DIR", lab_home() / "models")


def data_dir(explicit=None) -> Path:
    return _resolve(explicit, "LAB_DATA_DIR", lab_home() / "data")


def output_dir(explicit=None) -> Path:
    return _resolve(explicit, "LAB_OUTPUT_DIR", lab_home() / "outputs")


def find_data_file(name: str) -> Path:
    """Find a data file by a name relative to LAB_DATA_DIR or the bundled samples.

    Absolute paths and paths relative to the working directory are accepted as
    they are (a user's own file). A missing file is one clear error that names
    the variable to set.
    """
    candidates = [Path(name).expanduser()]
    if not candidates[0].is_absolute():
        candidates += [data_dir() / name, SAMPLES_DIR / name, lab_home() / name]
    for path in candidates:
        if path.exists():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates[1:]) or str(candidates[0])
    raise LabPathError(
        f"data file '{name}' not found (looked in: {looked}). "
        f"Set LAB_DATA_DIR to the folder that holds it (now: {data_dir()})."
    )


def slug(text: str) -> str:
    """A folder-safe version of a run or model name."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", str(text)).strip("-") or "run"


def default_run_name(prefix: str = "run") -> str:
    return f"{slug(prefix)}-{time.strftime('%Y%m%d-%H%M%S')}"


def is_complete(run: Path) -> bool:
    return (Path(run) / COMPLETE_MARKER).exists()


def run_dir(experiment: str, run_name: str, output_root=None, overwrite: bool = False, lock: bool = True) -> Path:
    """Create $LAB_OUTPUT_DIR/<experiment>/<run_name>/ for a new run, locked for this process.

    A finished run (it holds run_complete.json) is never overwritten unless
    `overwrite=True`. An unfinished one is reused, so training can resume from
    its last checkpoint; `overwrite=True` starts it again from scratch instead.
    With `lock` (every caller but DDP's non-main ranks) the folder is first locked
    (lab_utils/core/locks): a second live process with this run name stops with one line,
    before anything here is touched. mark_complete releases the lock.
    """
    from lab_utils.core.locks import hold_run, release_run

    path = output_dir(output_root) / slug(experiment) / slug(run_name)
    took = lock and hold_run(path)
    try:
        if is_complete(path) and not overwrite:
            raise RunExistsError(
                f"run '{path}' already finished; choose another run_name or pass overwrite=True"
            )
        if overwrite and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
    except BaseException:
        if took:
            release_run(path)
        raise
    return path


def mark_complete(run: Path, summary: dict | None = None) -> Path:
    """Write the marker that says every artifact of the run is on disk (atomically), and release the
    run's lock. Call it last."""
    from lab_utils.core.locks import release_run

    marker = Path(run) / COMPLETE_MARKER
    with write_then_rename(marker, overwrite=True) as staging:
        staging.write_text(json.dumps({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(summary or {})}, indent=2))
    release_run(run)
    return marker


def build_lock(target):
    """An exclusive lock beside a folder the lab builds once and shares (the embedded model
    cache, the tiny vision model): DDP ranks and parallel papermill runs start together,
    and without it both would build into the same staging folder at once. The second
    waits, then finds the folder built. Use: `with build_lock(target): ...`."""
    from filelock import FileLock  # a huggingface_hub dependency: always installed

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target.with_name(f".{target.name}.lock")))


@contextmanager
def write_then_rename(target, overwrite: bool = False, exists_error: type[Exception] = RunExistsError):
    """Yield `<target>.partial` to write a file or folder into; rename it to `target` when the block ends well.

    A crash never leaves something half-written that looks finished: the staging path is
    removed when the block raises, and a stale one from a killed process is cleared first.
    An existing `target` is an `exists_error` unless `overwrite=True`; a file is replaced
    atomically (os.replace), a folder is removed just before the rename.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise exists_error(f"'{target}' already exists; choose another output or pass overwrite=True")
    staging = target.with_name(target.name + ".partial")
    _remove(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise
    if target.is_dir():
        shutil.rmtree(target)
    os.replace(staging, target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
