"""Export a finished SFT run: merged safetensors, GGUF files, an Ollama Modelfile, optionally the hub.

    python -m scripts.export --run_dir sft/demo
    python -m scripts.export --run_dir sft/demo --formats merged,gguf-f16,gguf-q4_k_m,modelfile \\
        --serve_format gguf-q4_k_m
    python -m scripts.export --config configs/export.yaml --hub_repo me/smollm2-tutor --hub_dry_run false

formats (comma-separated):
    merged        LoRA merged into the base, `dtype` safetensors + tokenizer + chat template
    gguf-f16      also gguf-bf16, gguf-f32, gguf-q8_0: llama.cpp's converter, no compiler needed
    gguf-q4_k_m   any k-quant (q4_k_m, q5_k_m, q6_k, ...): needs llama-quantize or llama-cpp-python
    modelfile     Ollama Modelfile next to the `serve_format` GGUF

Every GGUF is converted from the merged folder, so `merged` is written whenever a GGUF
is asked for; a k-quant is quantized from the f16 GGUF, written for it if not asked.
Output: $LAB_OUTPUT_DIR/export/<run name>/ (or out_dir), with export.json listing
every file, its size and how long it took.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab_utils.export.gguf import GGUF_OUTTYPES, KQUANT_TYPES, convert_to_gguf, quantize_gguf, write_modelfile
from lab_utils.export.hub import push_to_hub
from lab_utils.export.merge import ExportError, locate_adapter, merge_adapter
from lab_utils.core.artifacts import write_json
from lab_utils.core.config import run_cli
from lab_utils.core.paths import is_complete, mark_complete, output_dir, run_dir, slug

SIMPLE_FORMATS = ("merged", "modelfile")


@dataclass(kw_only=True)
class Params:
    run_dir: str = ""  # the finished SFT run: a folder, or a path relative to $LAB_OUTPUT_DIR (e.g. sft/demo)
    formats: str = "merged,gguf-f16,gguf-q8_0,modelfile"  # comma-separated: merged, gguf-<type>, modelfile
    out_dir: str = ""  # default: $LAB_OUTPUT_DIR/export/<run name>
    dtype: str = "float16"  # merged weights: float16 | bfloat16 | float32
    serve_format: str = "gguf-q8_0"  # the GGUF the Modelfile points at
    system_prompt: str = ""  # Modelfile SYSTEM; default: the run's own system_prompt, else the template's
    # Modelfile chat template: "" = from the tokenizer (chatml, llama3, gemma, mistral), a family name,
    # or a Go template file
    template: str = ""
    temperature: float = 0.7  # Modelfile sampling temperature
    top_p: float = 0.9  # Modelfile nucleus-sampling top_p
    num_ctx: int = 2048  # Modelfile context window, in tokens
    hub_repo: str = ""  # e.g. me/smollm2-tutor; empty: no upload
    hub_dry_run: bool = True  # list what would be pushed; false pushes with $HF_TOKEN
    overwrite: bool = False  # replace a finished export in out_dir


def parse_formats(p: Params) -> list[str]:
    formats = [f.strip().lower() for f in p.formats.split(",") if f.strip()]
    known = set(SIMPLE_FORMATS) | {f"gguf-{t}" for t in GGUF_OUTTYPES + KQUANT_TYPES}
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise ExportError(f"formats={p.formats!r}: unknown {unknown}; known: {sorted(known)}")
    if "modelfile" in formats and p.serve_format not in formats:
        raise ExportError(f"modelfile points at serve_format={p.serve_format!r}, which is not in formats={p.formats!r}")
    return formats


def find_run(p: Params) -> Path:
    if not p.run_dir:
        raise ExportError("set --run_dir to a finished SFT run (a folder, or relative to $LAB_OUTPUT_DIR)")
    given = Path(p.run_dir).expanduser()
    return given if given.exists() or given.is_absolute() else output_dir() / given


def export_dir(p: Params, run: Path) -> Path:
    if not p.out_dir:
        return run_dir("export", run.name, overwrite=p.overwrite)
    out = Path(p.out_dir).expanduser()
    if is_complete(out) and not p.overwrite:
        raise ExportError(f"export '{out}' already finished; choose another out_dir or pass --overwrite true")
    out.mkdir(parents=True, exist_ok=True)
    return out


def timed(report: list, name: str, make, *args, **kwargs) -> Path:
    """Run one export step, record its output's size and seconds, print a line."""
    start = time.perf_counter()
    path = Path(make(*args, **kwargs))
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    report.append({"artifact": name, "path": path.name, "bytes": size, "seconds": round(seconds, 2)})
    print(f"[export] {name:<14} {size / 1e6:9.1f} MB {seconds:7.1f} s  {path.name}", flush=True)
    return path


def write_ggufs(p: Params, formats: list[str], merged: Path, out: Path, name: str, report: list) -> dict:
    ggufs = {}
    wanted = [f.removeprefix("gguf-") for f in formats if f.startswith("gguf-")]
    if any(t in KQUANT_TYPES for t in wanted) and "f16" not in wanted:
        wanted.insert(0, "f16")  # the quantizer's input
    for outtype in sorted(wanted, key=lambda t: t in KQUANT_TYPES):
        target = out / f"{name}-{outtype}.gguf"
        if outtype in KQUANT_TYPES:
            ggufs[outtype] = timed(report, f"gguf-{outtype}", quantize_gguf, ggufs["f16"], target, outtype,
                                   overwrite=p.overwrite)
        else:
            ggufs[outtype] = timed(report, f"gguf-{outtype}", convert_to_gguf, merged, target, outtype,
                                   overwrite=p.overwrite)
    return ggufs


def run(p: Params) -> dict:
    formats = parse_formats(p)
    run_path = find_run(p)
    trained = locate_adapter(run_path)  # refuses a missing or unfinished run before anything is written
    out = export_dir(p, run_path)
    name, report = slug(run_path.name), []
    print(f"[export] {run_path} -> {out}", flush=True)
    merged = None
    if "merged" in formats or any(f.startswith("gguf-") for f in formats):
        merged = timed(report, "merged", merge_adapter, run_path, out / "merged", p.dtype, overwrite=p.overwrite)
    ggufs = write_ggufs(p, formats, merged, out, name, report) if merged else {}
    if "modelfile" in formats:
        system = p.system_prompt or trained.system_prompt
        settings = dict(temperature=p.temperature, top_p=p.top_p, num_ctx=p.num_ctx, overwrite=p.overwrite,
                        template=p.template)
        served = ggufs[p.serve_format.removeprefix("gguf-")]
        timed(report, "modelfile", write_modelfile, served, merged, system, **settings)
    summary = {"source_run": str(run_path), "base_model": trained.base_model, "artifacts": report, "params": asdict(p)}
    write_json(summary, out / "export.json")
    if p.hub_repo:
        pushed = push_to_hub(out, p.hub_repo, dry_run=p.hub_dry_run)
        verb = "would push" if p.hub_dry_run else "pushed"
        for path, size in pushed:
            print(f"[export]   {size / 1e6:9.1f} MB  {path}", flush=True)
        print(f"[export] {verb} {len(pushed)} files ({sum(s for _, s in pushed) / 1e6:.1f} MB) to {p.hub_repo}",
              flush=True)
    mark_complete(out, {"artifacts": [r["path"] for r in report]})
    return {"out_dir": str(out), "artifacts": report}


def main(argv=None):
    return run_cli(run, Params, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
