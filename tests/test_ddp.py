"""Scale-out: every training script unchanged under `torchrun` (two CPU processes, gloo), under
accelerate's FSDP2 (fsdp.yaml) and across two separately started launchers (a two-node rendezvous).

The check that matters for DDP is that every rank ends with the same weights
and that files are written once. The scripts themselves have no hook for that,
so the test writes a tiny driver that wraps the experiment's `save_artifacts`
to dump each rank's in-memory adapter to a rank-suffixed file, then calls the
real `main()`.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.ddp

DRIVER = '''
import importlib, os, sys
from peft import get_peft_model_state_dict
from safetensors.torch import save_file

experiment = importlib.import_module("scripts." + sys.argv[1])
dump_dir, argv = sys.argv[2], sys.argv[3:]
real_save_artifacts = experiment.save_artifacts

def save_artifacts_and_dump_rank(p, run_dir, lm, *args, **kwargs):
    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(lm.model).items()}
    save_file(weights, os.path.join(dump_dir, f"rank{os.environ['RANK']}.safetensors"))
    return real_save_artifacts(p, run_dir, lm, *args, **kwargs)

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


def launch_env(outputs: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
            "LAB_OUTPUT_DIR": str(outputs), **extra}


def write_driver(tmp_path: Path) -> Path:
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(DRIVER)
    return driver


@pytest.mark.parametrize("experiment", list(CASES))
def test_two_gloo_ranks_train_identical_adapters_and_write_once(experiment, tmp_path, embedded_model_dir):
    driver = write_driver(tmp_path)
    env = launch_env(tmp_path / "outputs")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, str(driver), experiment, str(tmp_path), *COMMON, *CASES[experiment]], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
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


# ---- FSDP2 (configs/accelerate/fsdp.yaml) on two CPU ranks, against one process on the same rows -------------

# fp32 on both sides (the config's bf16 is overridden), 2 ranks x 2 rows = 1 process x 4 rows: accelerate hands
# rank r the r-th of each pair of batches the single process sees as one, and the lab's loss is the mean over all
# ranks' label tokens, so both take the same steps on the same rows from the same (seeded) LoRA init.
FSDP_ARGS = ["--config", "configs/sft_alpaca.yaml", "--max_steps", "3", "--save_steps", "3", "--precision", "fp32",
             "--max_rows", "24", "--heldout_rows", "2", "--max_new_tokens", "2", "--max_seq_length", "96",
             "--lora_r", "4", "--lora_alpha", "8", "--report_to", "none"]


def test_fsdp2_shards_on_cpu_ranks_and_matches_one_process(tmp_path, embedded_model_dir):
    outputs = tmp_path / "outputs"
    single = subprocess.run([sys.executable, "-m", "scripts.sft_alpaca", *FSDP_ARGS, "--batch_size", "4",
                             "--run_name", "single"], cwd=REPO, env=launch_env(outputs), capture_output=True,
                            text=True, timeout=600, check=False)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp.yaml",
                  "--num_processes", "2", "--mixed_precision", "no"]
    done = subprocess.run([*accelerate, "-m", "scripts.sft_alpaca", *FSDP_ARGS, "--batch_size", "2", "--run_name",
                           "fsdp"], cwd=REPO, env=launch_env(outputs, LAB_SHARDING_REPORT="1"), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("[lab] done:") == 2
    # one run folder each (the run locks, .<name>.lock, sit beside them)
    folders = sorted(p.name for p in (outputs / "sft_alpaca").iterdir() if not p.name.startswith("."))
    assert folders == ["fsdp", "single"]

    # sharding itself, as each rank saw it after training (lab_utils.training.runs.record_sharding)
    run = outputs / "sft_alpaca" / "fsdp"
    for rank in (0, 1):
        seen = json.loads((run / "sharding" / f"rank{rank}.json").read_text())
        assert seen["engine"] == "fsdp" and seen["world_size"] == 2
        layers = {u for u in seen["fsdp_units"] if u.startswith("base_model.model.model.layers.")}
        assert len(layers) == 30 and "<root>" in seen["fsdp_units"]  # one FSDP unit per decoder layer + the root
        assert seen["trainable_local_numel"] * 2 == seen["trainable_full_numel"]  # the adapter: exactly half each
        # every weight is a DTensor shard; FSDP2 leaves the tied input embedding (frozen) as a full copy
        assert all("embed_tokens" in n for n in seen["not_sharded"]) and len(seen["not_sharded"]) <= 1
        assert seen["local_numel"] < 0.65 * seen["full_numel"]
    assert (run / "checkpoints" / "checkpoint-3" / "pytorch_model_fsdp_0").is_dir()  # sharded checkpoint

    # the result: the same loss curve and adapter as the one process, up to fp32 reduction order
    # (measured: losses 4e-7 apart relative, adapter weights 3.2e-7 apart; one Adam step moves a weight by up to
    # lr = 2e-4, so 1e-5 would catch a single step taken differently, and 1e-4 relative a different batch)
    curves = [[r["loss"] for r in json.loads((outputs / "sft_alpaca" / n / "history.json").read_text()) if "loss" in r]
              for n in ("single", "fsdp")]
    assert len(curves[0]) == 3 and curves[0] == pytest.approx(curves[1], rel=1e-4)
    one = load_file(outputs / "sft_alpaca" / "single" / "adapter" / "adapter_model.safetensors")
    sharded = load_file(run / "adapter" / "adapter_model.safetensors")
    assert one.keys() == sharded.keys()
    assert max((one[k] - sharded[k]).abs().max().item() for k in one) < 1e-5
    assert min(one[k].abs().max().item() for k in one if "lora_B" in k) > 1e-5  # B moved off zero: a real check


def test_fsdp2_shards_the_vision_experiment_end_to_end(tmp_path, embedded_model_dir):
    """Qwen2.5-VL (tiny) through TRL's SFTTrainer: LoRA on both towers, every weight a DTensor shard."""
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp.yaml",
                  "--num_processes", "2", "--mixed_precision", "no"]
    done = subprocess.run([*accelerate, "-m", "scripts.sft_vision", *COMMON, *CASES["sft_vision"], "--precision",
                           "fp32"], cwd=REPO, env=launch_env(tmp_path / "outputs", LAB_SHARDING_REPORT="1"),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "outputs" / "sft_vision" / "ddp"
    assert (run / "run_complete.json").exists() and (run / "adapter" / "adapter_model.safetensors").exists()
    seen = [json.loads((run / "sharding" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank in seen:
        assert rank["engine"] == "fsdp" and len(rank["fsdp_units"]) > 2 and not rank["not_sharded"]
        assert abs(rank["local_numel"] / rank["full_numel"] - 0.5) < 0.01
    assert sum(r["trainable_local_numel"] for r in seen) == seen[0]["trainable_full_numel"]  # disjoint halves


# ---- two launchers, one rendezvous: what two machines do ------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_launch_trains_identical_adapters_and_only_global_rank0_writes(tmp_path, embedded_model_dir):
    """torchrun --nnodes 2 --nproc_per_node 1, started twice as two machines would: both ranks have LOCAL_RANK 0.
    Each "machine" has its own LAB_OUTPUT_DIR (no shared storage), so whatever a rank writes shows up there."""
    driver, port = write_driver(tmp_path), free_port()
    launchers = []
    for node in (0, 1):
        (tmp_path / f"node{node}").mkdir()
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                    "--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                    "--rdzv_id", "two-nodes"]
        command = [*torchrun, str(driver), "sft_alpaca", str(tmp_path / f"node{node}"), *COMMON, *CASES["sft_alpaca"]]
        launchers.append(subprocess.Popen(command, cwd=REPO, env=launch_env(tmp_path / f"out{node}"), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = [p.communicate(timeout=600)[0] for p in launchers]
    assert [p.returncode for p in launchers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]

    # c10d hands out global ranks by arrival, not by --node_rank: find which machine got rank 0
    main = next(n for n in (0, 1) if (tmp_path / f"node{n}" / "rank0.safetensors").exists())
    other = 1 - main
    rank0 = load_file(tmp_path / f"node{main}" / "rank0.safetensors")
    rank1 = load_file(tmp_path / f"node{other}" / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)

    run = tmp_path / f"out{main}" / "sft_alpaca" / "ddp"
    assert (run / "run_complete.json").exists() and (run / "params.json").exists()
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(saved[k], rank0[k]) for k in saved)
    # the other machine holds no run artifact: only the per-rank RNG state transformers saves in each checkpoint
    written = sorted(str(p.relative_to(tmp_path / f"out{other}")) for p in (tmp_path / f"out{other}").rglob("*")
                     if p.is_file())
    assert written in ([], ["sft_alpaca/ddp/checkpoints/checkpoint-2/rng_state_1.pth"]), written
