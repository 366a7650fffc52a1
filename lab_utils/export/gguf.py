"""GGUF files through llama.cpp's own converter, k-quants, the Ollama Modelfile.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from lab_utils.core.paths import build_lock, models_dir, write_then_rename
from lab_utils.core.progress import follow_output_file
from lab_utils.export.merge import ExportError


LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the sdist whose vendor/llama.cpp we use (2026-10)


CONVERT_SCRIPT = "convert_hf_to_gguf.py"


# What the converter needs from vendor/llama.cpp: the script, its model classes, its gguf-py.
LLAMA_CPP_PARTS = (CONVERT_SCRIPT, "conversion/", "gguf-py/", "requirements/", "LICENSE")


GGUF_OUTTYPES = ("f32", "f16", "bf16", "q8_0")  # written by the converter itself


KQUANT_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")


# llama.cpp's converter, from the llama-cpp-python sdist on PyPI
def llama_cpp_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return models_dir() / f"llama.cpp-{version}"


def _download_sdist(version: str, into: Path) -> Path:
    """pip download the llama-cpp-python sdist (never a wheel: wheels do not carry the converter)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", str(into),
           f"llama-cpp-python=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    sdists = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not sdists:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ExportError(f"could not fetch llama-cpp-python=={version} from the package index with pip: {tail[0]}")
    return sdists[0]


def _extract_converter(sdist: Path, into: Path) -> None:
    """Copy vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, ...} out of the sdist."""
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            top, _, rest = member.name.partition("/vendor/llama.cpp/")
            if rest and "/" not in top and rest.startswith(LLAMA_CPP_PARTS):
                member.name = rest
                members.append(member)
        if not any(m.name == CONVERT_SCRIPT for m in members):
            raise ExportError(f"{sdist.name} has no vendor/llama.cpp/{CONVERT_SCRIPT}; "
                              "pick another LLAMA_CPP_PYTHON_VERSION")
        tar.extractall(into, members=members, filter="data")


def ensure_llama_cpp(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The folder holding llama.cpp's convert_hf_to_gguf.py; fetched once (~1-2 min), cached after."""
    target = llama_cpp_dir(version)

    def fetched() -> bool:
        return (target / CONVERT_SCRIPT).exists() and (target / "gguf-py" / "gguf").is_dir()

    if fetched():
        return target
    with build_lock(target):  # two exports (or two test workers) at once: the second waits, then finds it
        if fetched():
            return target
        print(f"[lab] fetching llama.cpp's converter from llama-cpp-python=={version} (sdist, once) into {target}",
              flush=True)
        with write_then_rename(target, overwrite=True) as staging, tempfile.TemporaryDirectory() as tmp:
            _extract_converter(_download_sdist(version, Path(tmp)), staging)
    return target


def _check_converter_deps() -> None:
    import importlib.util

    needed = ("torch", "transformers", "numpy", "sentencepiece")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"llama.cpp's converter needs {missing}: pip install -r requirements.txt")


def _run_tool(cmd: list[str], what: str, env: dict | None = None, writes: Path | None = None,
              expected_bytes: int = 0) -> float:
    """Run a converter/quantizer subprocess; one clear error with its last lines if it fails.

    With `writes`, one progress bar follows that output file's size up to `expected_bytes`.
    """
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if writes is not None:
        stdout, stderr = follow_output_file(process, writes, expected_bytes, desc=what)
    else:
        stdout, stderr = process.communicate()
    if process.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-8:])
        raise ExportError(f"{what} failed (exit {process.returncode}):\n{tail}")
    return time.perf_counter() - start


GGUF_BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}  # q8_0: 32 int8 + one f16 scale


def expected_gguf_bytes(hf_dir: Path, outtype: str) -> int:
    """About how big the converter's GGUF will be: every weight in the folder's safetensors at
    `outtype` (for the progress bar; 1-D norms stay f32 and the vocabulary adds a little)."""
    weights = 0
    for shard in Path(hf_dir).glob("*.safetensors"):
        with open(shard, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        weights += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return int(weights * GGUF_BYTES_PER_WEIGHT[outtype])


def convert_to_gguf(hf_dir, out_path, outtype: str = "f16", overwrite: bool = False,
                    llama_cpp: Path | None = None) -> Path:
    """A safetensors model folder (e.g. merge_adapter's output) -> one GGUF file."""
    if outtype not in GGUF_OUTTYPES:
        hint = " (a k-quant: convert to f16 first, then quantize_gguf)" if outtype in KQUANT_TYPES else ""
        raise ExportError(f"outtype={outtype!r}: the converter writes {GGUF_OUTTYPES}{hint}")
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").exists():
        raise ExportError(f"'{hf_dir}' is not a model folder (no config.json); merge the adapter first")
    _check_converter_deps()
    script = Path(llama_cpp or ensure_llama_cpp()) / CONVERT_SCRIPT
    # Offline: the converter must read only the folder, never ask the hub for a config or tokenizer.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # keep the vendored gguf-py, which matches this converter
    with write_then_rename(out_path, overwrite, exists_error=ExportError) as staging:
        cmd = [sys.executable, str(script), str(hf_dir), "--outtype", outtype, "--outfile", str(staging)]
        _run_tool(cmd, f"convert_hf_to_gguf ({hf_dir.name} -> {outtype})", env, writes=staging,
                  expected_bytes=expected_gguf_bytes(hf_dir, outtype))
    return Path(out_path)


# k-quants: llama.cpp's C++ quantizer
def find_quantizer() -> str | None:
    """'llama-quantize' binary path, 'llama_cpp' for the Python binding, or None."""
    binary = shutil.which("llama-quantize")
    if binary:
        return binary
    import importlib.util

    return "llama_cpp" if importlib.util.find_spec("llama_cpp") else None


def _quantize_with_binding(src: Path, out: Path, qtype: str) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        raise ExportError(f"llama_model_quantize({src.name} -> {qtype}) returned {status}")


def quantize_gguf(src_gguf, out_path, qtype: str = "q4_k_m", overwrite: bool = False) -> Path:
    """Re-quantize a f16/bf16/f32 GGUF to a k-quant with llama.cpp's quantizer."""
    qtype = qtype.lower()
    if qtype not in KQUANT_TYPES:
        raise ExportError(f"qtype={qtype!r}: expected one of {KQUANT_TYPES} (f16/bf16/q8_0 come from convert_to_gguf)")
    src = Path(src_gguf)
    if not src.exists():
        raise ExportError(f"GGUF '{src}' not found; convert_to_gguf(..., outtype='f16') first")
    quantizer = find_quantizer()
    if quantizer is None:
        raise ExportError(
            f"{qtype} needs llama.cpp's quantizer and none is installed: put `llama-quantize` on PATH "
            f"(cmake -B build && cmake --build build --target llama-quantize, in {llama_cpp_dir()} sources "
            "or a llama.cpp checkout) "
            f"or `pip install llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}` (compiles llama.cpp, several minutes). "
            "f16, bf16 and q8_0 need neither."
        )
    with write_then_rename(out_path, overwrite, exists_error=ExportError) as staging:
        if quantizer == "llama_cpp":
            _quantize_with_binding(src, staging, qtype)
        else:
            _run_tool([quantizer, str(src), str(staging), qtype.upper()], f"llama-quantize ({src.name} -> {qtype})")
    return Path(out_path)


# Ollama Modelfile: the chat template as a Go template, stop tokens, system prompt, sampling

# The families' Go templates, their detection and the rendering check: lab_utils/chat_templates.py
def _load_tokenizer(tokenizer_or_dir):
    if hasattr(tokenizer_or_dir, "apply_chat_template"):
        return tokenizer_or_dir
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_or_dir))


def _modelfile_text(text: str, what: str) -> str:
    if '"""' in text:
        raise ExportError(f'the {what} contains """, which an Ollama Modelfile cannot quote')
    return text


def write_modelfile(
    gguf_path,
    tokenizer_or_dir,
    system_prompt: str | None = None,
    temperature: float = 0.7,
    top_p: float = 0.9,
    num_ctx: int = 2048,
    overwrite: bool = False,
    template: str = "",
) -> Path:
    """Write `Modelfile` next to the GGUF, for `ollama create NAME -f Modelfile`.

    The chat template is chosen from the tokenizer (chatml, llama3, gemma, mistral) and
    checked to render like the tokenizer's own; `template` forces a family or names a
    file holding an Ollama Go template (lab_utils/chat_templates.py). Without a system
    prompt the template's built-in one is used, so Ollama answers the way
    `apply_chat_template` + generate did.
    """
    from lab_utils.export.ollama_templates import ChatTemplateError, choose_template, default_system_prompt

    gguf_path = Path(gguf_path)
    if not gguf_path.exists():
        raise ExportError(f"GGUF '{gguf_path}' not found; the Modelfile must point at an existing file")
    tokenizer = _load_tokenizer(tokenizer_or_dir)
    try:
        family, go_template, family_stops = choose_template(tokenizer, template)
    except ChatTemplateError as err:
        raise ExportError(str(err)) from None
    system = system_prompt or default_system_prompt(tokenizer, family)
    stops = list(family_stops)
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines = [f"FROM ./{gguf_path.name}", "", f'TEMPLATE """{_modelfile_text(go_template, "template")}"""', ""]
    lines += [f'PARAMETER stop "{token}"' for token in stops]
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER top_p {top_p}", f"PARAMETER num_ctx {num_ctx}"]
    if system:
        lines += ["", f'SYSTEM """{_modelfile_text(system, "system prompt")}"""']
    with write_then_rename(gguf_path.parent / "Modelfile", overwrite, exists_error=ExportError) as staging:
        staging.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return gguf_path.parent / "Modelfile"
