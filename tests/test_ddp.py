"""Scale-out: every training script unchanged under `torchrun` (two CPU processes, gloo).

The check that matters for DDP is that every rank ends with the same weights
and that files are written once. The scripts themselves have no hook for that,
so the test writes a tiny driver that wraps the experiment's `save_artifacts`
to dump each rank's in-memory adapter to a rank-suffixed file, then calls the
real `main()`.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

DRIVER = '''
import importlib, os, sys
from peft import get_peft_model_state_dict
from safetensors.torch import save_file

experiment = importlib.import_module("scripts." + sys.argv[1])
dump_dir, argv = sys.argv[2], sys.argv[3:]
real_save_artifacts = experiment.save_artifacts

def save_artifacts_and_dump_rank(p, run, model, *args, **kwargs):
    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, os.path.join(dump_dir, f"rank{os.environ['RANK']}.safetensors"))
    return real_save_artifacts(p, run, model, *args, **kwargs)

experiment.save_artifacts = save_artifacts_and_dump_rank
experiment.main(argv)
'''

COMMON = ["--max_steps", "2", "--save_steps", "2", "--lora_r", "4", "--lora_alpha", "8", "--report_to", "none",
          "--run_name", "ddp"]
CASES = {
    "sft_alpaca": ["--max_rows", "24", "--heldout_rows", "2", "--batch_size", "2", "--max_new_tokens", "2",
                   "--max_seq_length", "96"],
    # 1 prompt x 2 completions per rank and step; GRPO gathers the group's rewards across ranks
    "grpo_gsm8k": ["--max_rows", "12", "--heldout_rows", "2", "--num_generations", "2", "--batch_size", "2",
                   "--max_completion_length", "8", "--max_new_tokens", "4",
                   "--sft_warmup_steps", "1", "--sft_warmup_batch_size", "2"],  # the warm-up runs under DDP too
    "sft_vision": ["--max_rows", "8", "--heldout_rows", "2", "--batch_size", "2", "--max_new_tokens", "2",
                   "--grid_images", "2"],
}


@pytest.mark.parametrize("experiment", list(CASES))
def test_two_gloo_ranks_train_identical_adapters_and_write_once(experiment, tmp_path, embedded_model_dir):
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "LAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, str(driver), experiment, str(tmp_path), *COMMON, *CASES[experiment]], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("[lab] done:") == 2  # both ranks ran the whole script

    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and rank0
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "DDP ranks diverged"
    assert any(rank0[k].abs().sum() > 0 for k in rank0 if "lora_B" in k), "LoRA B moved off zero: it trained"

    run = tmp_path / "outputs" / experiment / "ddp"
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    assert saved.keys() == rank0.keys() and all(torch.equal(saved[k], rank0[k]) for k in saved)
    assert (run / "run_complete.json").exists() and (run / "metrics.json").exists()
    # one checkpoint, written once (TRL's GRPOTrainer also leaves its model card README.md there)
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["checkpoint-2"]
