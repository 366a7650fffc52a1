"""One process per run folder: a lock beside the folder, held while the run writes into it.

Two runs given the same run_name (a notebook and a batch run, two terminals) would
otherwise train into one folder at once, their checkpoints and history interleaved.
The lock is `.<run_name>.lock` beside the run folder (so overwriting the folder never
deletes the lock of the process doing it), an OS file lock (flock, through `filelock`)
that the kernel drops the moment its process dies, whatever killed it. The file also
says who holds it (pid, host, boot, since when), for the one line a second run stops with.

A lock the OS says is free but whose file still names a holder was left by a process
that ended without releasing it (kill -9, a crash, a reboot): it is taken over with a
line saying so. If that holder is demonstrably alive (same host and boot, same pid and
process start time), the filesystem's locks are not working and the run refuses instead.

One process may open the same run again (a notebook kernel rerunning its cells): that
is no second run. The lock is released when the run is marked complete
(paths.mark_complete), when the process exits, or by release_run().
"""

import atexit
import json
import os
import socket
import time
from pathlib import Path

from lab_utils.core.errors import LabError

_HELD = {}  # lock file path -> FileLock, the runs this process holds


class RunLockedError(LabError, RuntimeError):
    """Another live process is running in this run folder."""


def lock_path(folder) -> Path:
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.lock")


def boot_id() -> str:
    """Changes at every boot (Linux); a holder recorded under another boot is gone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def this_process() -> dict:
    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(), "boot": boot_id(),
            "started": round(psutil.Process().create_time(), 2), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def holder_alive(holder: dict) -> bool:
    """Is the process the lock file names still running? Only provable on this host, in this boot."""
    import psutil

    if holder.get("host") != socket.gethostname() or holder.get("boot") != boot_id():
        return False
    try:
        started = psutil.Process(int(holder["pid"])).create_time()
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False
    return abs(started - float(holder.get("started") or 0)) < 1.0  # not a recycled pid


def read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def read_holder_of_held_lock(path: Path, wait_s: float = 3.0) -> dict:
    """The holder of a lock another process holds. It writes its name just after taking the
    lock, so a run started at the same moment can find the file still empty: wait briefly."""
    deadline = time.monotonic() + wait_s
    holder = read_holder(path)
    while not holder and time.monotonic() < deadline:
        time.sleep(0.05)
        holder = read_holder(path)
    return holder


def describe(holder: dict) -> str:
    if not holder:
        return "another process (it left no name)"
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"


def is_me(holder: dict) -> bool:
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname() and \
        holder.get("boot") == boot_id()


def hold_run(folder) -> bool:
    """Lock run folder `folder` for this process; True if this call took it (False: already held here).

    Raises RunLockedError (one line: who holds it) when another live process does; the
    folder is not touched. Take the lock before creating, overwriting or writing the folder.
    """
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    if str(path) in _HELD:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        holder = read_holder_of_held_lock(path)
        raise RunLockedError(f"run folder {folder} is in use by {describe(holder)}; wait for that run "
                             "to end or stop it, or choose another run_name (a notebook kernel holds its run "
                             "until the run finishes or the kernel restarts)") from None
    previous = read_holder(path)
    if previous and not is_me(previous):
        if holder_alive(previous):  # the OS lock did not protect us: never run beside a live holder
            lock.release()
            raise RunLockedError(f"run folder {folder} is in use by {describe(previous)}, which is still running "
                                 "(this filesystem's file locks do not work); wait for it or choose another run_name")
        gone = "the machine restarted since" if previous.get("boot") != boot_id() and \
            previous.get("host") == socket.gethostname() else "that process is gone"
        print(f"[lab] taking over the lock of run folder {folder} from {describe(previous)}: {gone}")
    path.write_text(json.dumps(this_process()), encoding="utf-8")
    _HELD[str(path)] = lock
    return True


def release_run(folder) -> None:
    """Let other processes run in `folder` again (a no-op when this process does not hold it)."""
    lock = _HELD.pop(str(lock_path(folder)), None)
    if lock is not None:
        _release(lock)


def _release(lock) -> None:
    try:
        Path(lock.lock_file).write_text("", encoding="utf-8")  # released cleanly: nobody to take over from
    except OSError:
        pass
    lock.release()


@atexit.register
def _release_all() -> None:
    """A script that stops on an error (not a kill) leaves no stale holder behind."""
    while _HELD:
        _release(_HELD.popitem()[1])
