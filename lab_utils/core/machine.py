"""What this machine has, and how much of it a piece of work used.

The GPU checks (scripts/verify_gpu.py), the benchmarks (benchmarks/) and the batch runner
(scripts/batch.py) share these: the device and package versions, why a case cannot run here,
peak memory (torch's own counter, or polled for work in another process), and one call run in a
fresh Python process. Unsloth patches transformers and TRL when it is imported, and peak memory
is per process, so every measured case runs in its own process (`run_isolated`) and returns
one JSON line. Importing this module imports neither torch nor transformers.
"""

import json
import os
import subprocess
import sys
import threading
import time


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def has_package(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def environment() -> dict:
    """The device, the versions of the packages that decide the numbers, and Python's."""
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for package in ("peft", "trl", "unsloth", "vllm", "bitsandbytes"):
        if has_package(package):
            from importlib.metadata import PackageNotFoundError, version

            try:
                versions[package] = version(package)
            except PackageNotFoundError:
                pass
    return {"device": gpu_name(), "versions": versions, "python": sys.version.split()[0]}


def skip_reasons(needs: list[str]) -> str | None:
    """Why a case cannot run here ("no CUDA GPU", "unsloth not installed", ...), or None."""
    reasons = []
    if "cuda" in needs and not cuda_available():
        reasons.append("no CUDA GPU")
    for package in ("unsloth", "vllm", "bitsandbytes", "trl"):
        if package in needs and not has_package(package):
            reasons.append(f"{package} not installed")
    return "; ".join(reasons) or None


# ---------------------------------------------------------------- memory

def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, in GiB (None on CPU)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class MemoryPoller:
    """Peak memory of work running in other processes (a notebook kernel, a case's child), polled.

    Always: the resident memory of this process's children (psutil), `peak_rss_bytes`. With
    device=True on a CUDA box also the device memory in use by every process, above what was in
    use when polling started (`device_gib()`); device=False never imports torch. A separate
    process's peak cannot be read from this one until it exits, and polling misses spikes
    shorter than the interval.
    """

    def __init__(self, interval_s: float = 0.5, device: bool = False):
        import psutil

        self.me, self.interval_s, self.device = psutil.Process(), interval_s, device
        self.peak_rss_bytes, self.peak_device_bytes, self.device_base = 0, 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _device_used(self) -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    def _children_rss(self) -> int:
        import psutil

        total = 0
        for child in self.me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a child that exited between listing and reading
                pass
        return total

    def _poll(self):
        while not self._stop.wait(self.interval_s):
            self.peak_rss_bytes = max(self.peak_rss_bytes, self._children_rss())
            if self.device_base is not None:
                self.peak_device_bytes = max(self.peak_device_bytes, self._device_used())

    def __enter__(self):
        if self.device and cuda_available():
            self.device_base = self._device_used()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def device_gib(self) -> float | None:
        """Peak device memory above the start, in GiB; None without device polling or a CUDA GPU."""
        if self.device_base is None:
            return None
        return round(max(0, self.peak_device_bytes - self.device_base) / 2**30, 3)


# ---------------------------------------------------------------- one call per process

def run_isolated(module: str, function: str, payload: dict, timeout: int = 3600) -> dict:
    """Call module.function(**payload) in a fresh Python; {"status": "ok", "value": ...} or the error."""
    command = [sys.executable, "-m", "lab_utils.core.machine", "--worker", module, function, json.dumps(payload)]
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timed out after {timeout} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            value = json.loads(line[len("RESULT "):])
            return {"status": "ok", "value": value, "seconds": round(time.time() - started, 1)}
    tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
    if "OutOfMemoryError" in done.stderr:
        tail = "CUDA out of memory"
    return {"status": f"failed: {tail[:200]}", "stderr_tail": done.stderr[-2000:]}


def worker_main(argv: list[str]) -> None:
    import importlib

    module, function, payload = argv
    value = getattr(importlib.import_module(module), function)(**json.loads(payload))
    print("RESULT " + json.dumps(value), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[2:])
