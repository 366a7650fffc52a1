"""Knob values that can never work, refused in one line before anything is loaded.

A knob keeps one name and one meaning in every experiment (lab_utils/training/params.py), so its
valid range is written once, here, by name: `check_knob_values(p)` checks whichever of these
fields `p` has. Without it a negative `max_completion_length` or a typo in `rollouts` surfaces
minutes later as a traceback from deep inside TRL or vLLM. Checks that depend on several knobs
(load_best with eval_steps, DPO's beta, reward weights) stay with the code that uses them.
"""

import dataclasses

from lab_utils.core.errors import ParamError

# Counts and sizes: zero or less can never run.
AT_LEAST_ONE = (
    "batch_size", "max_seq_length", "gradient_accumulation_steps", "logging_steps", "save_steps",
    "save_total_limit", "lora_r", "lora_alpha", "max_new_tokens", "max_completion_length",
    "max_prompt_length", "sft_warmup_batch_size", "answer_rows", "max_image_side", "max_pixels", "min_pixels",
    "num_ctx", "max_side", "n_users", "n_items", "true_rank", "rank", "n_iters", "choice_iters", "sweep_iters",
    "max_rank", "demo_steps", "demo_lora_r", "demo_lora_alpha", "perplexity_rows", "port", "max_model_len",
)
# 0 means "none" or "all" (the knob's help says which); below zero means nothing.
AT_LEAST_ZERO = (
    "eval_steps", "eval_loss_rows", "max_rows", "heldout_rows", "weight_decay", "max_grad_norm",
    "loraplus_lr_ratio", "sft_warmup_steps", "min_length", "max_length", "cpu_threads", "grid_images",
    "reg", "bias_reg", "noise_std", "simpo_gamma", "temperature",
)
# Rates: zero would train nothing.
ABOVE_ZERO = ("learning_rate", "sft_warmup_learning_rate", "num_train_epochs")
# Shares of something: [low, high) or (low, high].
SHARES = {
    "lora_dropout": (0.0, 1.0, "[0, 1)"),
    "validation_fraction": (0.0, 1.0, "[0, 1)"),
    "test_fraction": (0.0, 1.0, "[0, 1)"),
    "valid_fraction": (0.0, 1.0, "[0, 1)"),
    "energy_fraction": (0.0, 1.0, "(0, 1]"),
    "density": (0.0, 1.0, "(0, 1]"),
    "top_p": (0.0, 1.0, "(0, 1]"),
    "vllm_gpu_memory_utilization": (0.0, 1.0, "(0, 1]"),
    "gpu_memory_utilization": (0.0, 1.0, "(0, 1]"),
}
# Knobs with a closed set of values (the same lists their help comments show); the code that reads a knob checks
# against the same tuple (backend.get_backend, lora.resolve_precision, rollouts.choose_rollouts).
CHOICES = {
    "backend": ("auto", "hf", "unsloth"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "report_to": ("tensorboard", "wandb", "swanlab", "none"),
    "rollouts": ("auto", "vllm", "hf"),
    "batching": ("padding_free", "padded"),
}
# GRPO's advantage is a reward minus its group's mean: a group of one always scores zero.
AT_LEAST = {"num_generations": 2}


def _share_ok(value: float, low: float, high: float, shown: str) -> bool:
    if shown.startswith("["):
        return low <= value < high
    return low < value <= high


def knob_problems(p) -> list[str]:
    """What is wrong with `p`'s knob values, one short phrase each (empty: nothing)."""
    problems = []
    for name in (f.name for f in dataclasses.fields(p)):
        value = getattr(p, name)
        if name not in CHOICES and (isinstance(value, bool) or not isinstance(value, (int, float))):
            continue  # None (the default's "not set") and anything not a number: other checks' business
        if name in AT_LEAST_ONE and value < 1:
            problems.append(f"{name}={value}: expected 1 or more")
        elif name in AT_LEAST_ZERO and value < 0:
            problems.append(f"{name}={value}: expected 0 or more")
        elif name in ABOVE_ZERO and not value > 0:
            problems.append(f"{name}={value}: expected a number above 0")
        elif name in AT_LEAST and value < AT_LEAST[name]:
            problems.append(f"{name}={value}: expected {AT_LEAST[name]} or more")
        elif name in SHARES and not _share_ok(value, *SHARES[name]):
            problems.append(f"{name}={value}: expected a share in {SHARES[name][2]}")
        elif name in CHOICES and str(value).strip().lower() not in CHOICES[name]:
            problems.append(f"{name}={value!r}: expected {' | '.join(CHOICES[name])}")
    return problems


def check_knob_values(p):
    """`p` itself when every knob value can work; else one ParamError naming each bad knob."""
    problems = knob_problems(p)
    if problems:
        raise ParamError("; ".join(problems))
    return p
