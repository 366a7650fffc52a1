"""Where the GRPO CPU demo's wall time goes: warm-up, gradings, and each GRPO step split in four.

    python -m benchmarks.grpo_demo_time --config configs/grpo_gsm8k.yaml --rollouts vllm
    python -m benchmarks.grpo_demo_time --config configs/grpo_gsm8k.yaml --rollouts hf --out before

Runs scripts/grpo_gsm8k.py's run() unchanged and times its parts by wrapping functions
(instrumentation only; nothing is replaced):
    engine        the vLLM engine start (0 on HF rollouts)
    warmup        the SFT warm-up
    grading       the greedy answers before, after the warm-up and after GRPO
    generation    TRL's _generate: the rollouts (vLLM rollout_func or HF generate)
    reference     forward passes inside _generate_and_score_completions (the reference model for beta > 0)
    rewards       the reward functions
    policy        the rest of training_step: the policy's forward + backward
    trl_other     the rest of each optimizer step (optimizer, logging, checkpoints)
Wall seconds and this process's CPU seconds (all threads) are both kept: on a shared CPU
the wall time depends on the other jobs, the CPU time much less. Prints the split, the
machine's load average before and after, and writes
benchmarks/results/grpo_demo_time-<name>.json.
"""

import argparse
import functools
import json
import os
import time
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def timed(totals: dict, key: str, owner, name: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - started
            totals[f"cpu_{key}"] += time.process_time() - cpu

    setattr(owner, name, wrapper)


def instrument(totals: dict) -> None:
    from trl import GRPOTrainer

    from scripts import grpo_gsm8k

    if hasattr(grpo_gsm8k, "start_engine"):  # (absent before vLLM rollouts existed)
        timed(totals, "engine", grpo_gsm8k, "start_engine")
    timed(totals, "warmup", grpo_gsm8k, "warm_up")
    timed(totals, "grading", grpo_gsm8k, "evaluate")
    timed(totals, "generation", GRPOTrainer, "_generate")
    timed(totals, "rewards", GRPOTrainer, "_calculate_rewards")
    timed(totals, "score", GRPOTrainer, "_generate_and_score_completions")
    timed(totals, "training_step", GRPOTrainer, "training_step")
    timed(totals, "grpo_train", GRPOTrainer, "train")  # GRPO's only (the warm-up's SFT trainer is not one)


def split(totals: dict, steps: int, prefix: str = "") -> dict:
    """Seconds per part (wall, or this process's CPU time with prefix "cpu_"); the GRPO parts also per step.
    `reference` = scoring minus generation and rewards."""
    t = {k: totals[prefix + k] for k in ("engine", "warmup", "grading", "generation", "rewards", "score",
                                          "training_step", "grpo_train")}
    parts = {"engine": t["engine"], "warmup": t["warmup"], "grading": t["grading"], "generation": t["generation"],
             "reference": t["score"] - t["generation"] - t["rewards"], "rewards": t["rewards"],
             "policy": t["training_step"] - t["score"], "trl_other": t["grpo_train"] - t["training_step"]}
    out = {k: round(v, 1) for k, v in parts.items()}
    out["grpo_per_step"] = {k: round(parts[k] / max(steps, 1), 2)
                            for k in ("generation", "reference", "rewards", "policy", "trl_other")}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="", help="results name: benchmarks/results/grpo_demo_time-<out>.json")
    a, rest = parser.parse_known_args(argv)
    from lab_utils.core.config import run_cli
    from scripts import grpo_gsm8k

    totals = defaultdict(float)
    instrument(totals)
    load_before = os.getloadavg()
    started, cpu = time.perf_counter(), time.process_time()
    result = run_cli(grpo_gsm8k.run, grpo_gsm8k.Params, rest, description=grpo_gsm8k.__doc__)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    m = result["metrics"]
    report = {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
              "load_average_before": [round(x, 1) for x in load_before],
              "load_average_after": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count(),
              "args": rest, "rollouts": m.get("rollouts"), "steps": m.get("steps_trained"),
              "format_rate_before": m.get("format_rate_before"), "format_rate_after_warmup":
              m.get("format_rate_after_warmup"), "format_rate_after": m.get("format_rate_after"),
              "accuracy_before": m.get("accuracy_before"), "accuracy_after": m.get("accuracy_after"),
              "split_seconds": split(totals, m.get("steps_trained") or 0),
              "split_cpu_seconds": split(totals, m.get("steps_trained") or 0, "cpu_")}
    print(json.dumps(report, indent=2))
    if a.out:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"grpo_demo_time-{a.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
