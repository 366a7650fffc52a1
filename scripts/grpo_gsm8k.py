"""GRPO with LoRA on GSM8K: the model learns from rewards on its own sampled answers.

    python -m scripts.grpo_gsm8k --config configs/grpo_gsm8k.yaml
    python -m scripts.grpo_gsm8k --config configs/grpo_gsm8k.yaml --max_steps 4 --num_generations 2
    papermill notebooks/grpo_gsm8k.ipynb out.ipynb -f configs/grpo_gsm8k_gpu.yaml

Each step samples `num_generations` completions per prompt, scores each with the
reward functions of rewards/ (weighted by `reward_weights`), and pushes the policy
toward the completions that beat their group's mean (GRPO: the group is the
baseline, no value model). `beta` > 0 keeps it near the base model (KL term).

Defaults are the CPU demo: the embedded SmolLM2-135M, the bundled 41-problem
sample (16 held out), rollouts by HF generate. A 135M model never writes the
<reasoning>/<answer> layout by itself, so every completion of a group would score
the same and GRPO would learn nothing; the demo first runs a short SFT warm-up
(`sft_warmup_steps`) on the training problems' worked solutions in that layout,
by the shared SFT loop, then GRPO. On a CUDA box with vllm (and unsloth)
installed, configs/grpo_gsm8k_gpu.yaml trains a real model on real GSM8K with
vLLM rollouts (lab_utils/training/rollouts.py), without a warm-up. Each run writes to
$LAB_OUTPUT_DIR/grpo_gsm8k/<run_name>/: adapter/, checkpoints/, sft_warmup/,
tensorboard/, params.json, metrics.json (format rate and accuracy before, after
the warm-up and after GRPO; mean reward of the first and last quarter of the
steps; step time), history.json, rewards.png, dynamics.png, training.png,
samples.md/.csv, skipped_rows.csv, run_complete.json.
"""

from dataclasses import dataclass, field, fields

import pandas as pd

from data_loaders.common import SkipReport, split_heldout
from data_loaders.gsm8k import load_gsm8k, resolve_gsm8k_file, worked_solution_conversations
from lab_utils.core import plots
from lab_utils.core.artifacts import setup_logging, write_table
from lab_utils.core.backend import get_backend
from lab_utils.models.chat import generate
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.models.registry import load_tokenizer, resolve_model
from lab_utils.core.progress import show_progress
from lab_utils.training.rollouts import (VllmRolloutFunc, choose_rollouts, load_fast_inference_model,
                                         start_rollout_engine, vllm_config_kwargs)
from lab_utils.training.lora import build_lora_model, weights_dtype
from lab_utils.training.params import AnswerParams, LoraParams, LoraSFTParams, OptimParams, RunParams
from lab_utils.training.trainer import (LossHistory, last_checkpoint, lora_plus_optimizers, make_trainer, train_from_last_checkpoint, training_arguments)
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.batching import tokenize_dataset
from lab_utils.training.lora import trainable_parameters
from rewards import GSM8K_WEIGHTS, SYSTEM_PROMPT, SYSTEM_PROMPT_ZH, get

EXPERIMENT = "grpo_gsm8k"
SYSTEM_PROMPTS = {"en": SYSTEM_PROMPT, "zh": SYSTEM_PROMPT_ZH}


@dataclass(kw_only=True)
class Params(RunParams, LoraParams, OptimParams, AnswerParams):
    # data (the model, LoRA, optimisation and run knobs: lab_utils.training.params's shared groups)
    data_file: str = "gsm8k_sample.jsonl"  # JSONL, or a folder under LAB_DATA_DIR holding train.jsonl ("gsm8k")
    eval_file: str = ""  # "" = hold heldout_rows out of data_file; a folder means its test.jsonl
    max_rows: int = 0  # training prompts, 0 = every row
    heldout_rows: int = 16  # problems graded before and after training
    prompt_language: str = "en"  # en | zh: which format instruction (rewards.SYSTEM_PROMPT*) the prompts carry
    max_prompt_length: int = 256  # longer prompts are skipped and listed in skipped_rows.csv
    # GRPO
    num_generations: int = 4  # completions per prompt: the group whose mean is the baseline
    max_completion_length: int = 64
    temperature: float = 1.0  # sampling temperature of the rollouts (variety within a group is the signal)
    beta: float = 0.04  # KL penalty toward the base model; 0 = none (and no reference forward pass)
    # the GSM8K recipe, plus a repetition penalty: a 135M model rarely writes a tag in 64 tokens, so the recipe
    # alone scores every completion 0 (no advantage, no gradient); the penalty varies within every group
    reward_names: list[str] = field(default_factory=lambda: [*GSM8K_WEIGHTS, "repetition_penalty"])
    reward_weights: list[float] = field(default_factory=lambda: [*GSM8K_WEIGHTS.values(), 0.5])
    # rollouts
    rollouts: str = "auto"  # auto (vLLM wherever it is installed: make setup-vllm) | vllm | hf
    vllm_gpu_memory_utilization: float = 0.5  # vLLM's share of the GPU; training gets the rest
    # SFT warm-up before GRPO (0 steps = none). A 135M model almost never writes the <reasoning>/<answer>
    # layout by itself, so every completion of a group scores the same and GRPO has nothing to compare; a few
    # supervised steps on worked solutions written in that layout (the training prompts' gold solutions) make
    # formatted answers *possible*, and GRPO then makes them *likely* (Unsloth's GRPO notebooks prime the
    # format the same way). The warm-up reuses the SFT loop of lab_utils/training/.
    sft_warmup_steps: int = 24  # ~4 passes over the demo's 25 training solutions
    sft_warmup_learning_rate: float = 5e-4
    sft_warmup_batch_size: int = 4  # worked solutions per warm-up step
    # GRPO's defaults differ from SFT's: hard clipping (RL gradients are noisy), a rate high enough for
    # the CPU demo's dozen steps to show movement
    learning_rate: float = 1e-4
    batch_size: int = 4  # completions per device step; prompts per step = batch_size / num_generations
    max_steps: int = 12
    max_grad_norm: float = 0.1
    save_steps: int = 6
    max_seq_length: int = 512  # context of the unsloth/vLLM model: prompt + completion
    max_new_tokens: int = 64  # greedy answer length for the before/after accuracy


# Every experiment has the same steps, in this order (tests/test_experiment_steps.py checks it):
# load_data, setup_run, load_model, build_dataset, evaluate, train, save_artifacts, run, main.

def check_params(p: Params) -> None:
    """Mistakes that would otherwise surface as an assertion deep inside TRL."""
    if len(p.reward_names) != len(p.reward_weights):
        raise ValueError(f"reward_names has {len(p.reward_names)} entries but reward_weights {len(p.reward_weights)}")
    if p.num_generations < 2:
        raise ValueError("num_generations must be at least 2: GRPO compares completions within a group")
    if (p.batch_size * p.gradient_accumulation_steps) % p.num_generations:
        raise ValueError(f"batch_size * gradient_accumulation_steps ({p.batch_size * p.gradient_accumulation_steps}) "
                         f"must be a multiple of num_generations ({p.num_generations})")
    if p.prompt_language not in SYSTEM_PROMPTS:
        raise ValueError(f"prompt_language={p.prompt_language!r}: expected one of {sorted(SYSTEM_PROMPTS)}")


def load_data(p: Params):
    """(training prompts, evaluation problems, skip report), checked before any run folder exists.

    The model's tokenizer (not the model) is loaded here: prompts longer than max_prompt_length
    tokens are skipped and reported.
    """
    check_params(p)
    report = SkipReport()
    options = dict(system_prompt=SYSTEM_PROMPTS[p.prompt_language], tokenizer=load_tokenizer(resolve_model(p.model)),
                   max_prompt_length=p.max_prompt_length, report=report)
    train_prompts = load_gsm8k(p.data_file, split_file="train.jsonl", limit=p.max_rows or None, **options)
    if p.eval_file:
        problems = load_gsm8k(p.eval_file, split_file="test.jsonl", limit=p.heldout_rows, **options)
    else:
        path = resolve_gsm8k_file(p.data_file, "train.jsonl")
        train_prompts, problems = split_heldout(train_prompts, p.heldout_rows, p.seed, path)
    print(f"[lab] {p.data_file}: {report.summary()}; {len(train_prompts)} train prompts, {len(problems)} eval problems")
    return train_prompts, problems, report


def setup_run(p: Params):
    return open_run(EXPERIMENT, p)


def start_engine(p: Params):
    """(rollouts, the lab's vLLM engine or None), before the run folder exists: vLLM missing, no room for
    its KV cache or an architecture it cannot serve stop the run in one line and leave nothing behind.
    The engine serves the rollouts (through TRL's rollout_func) and the before/after grading."""
    backend = get_backend(p.backend)
    rollouts = choose_rollouts(p.rollouts, backend)
    print(f"[lab] rollouts: {rollouts.engine} ({rollouts.reason})", flush=True)
    if not rollouts.lab_engine:
        return rollouts, None
    dtype = str(weights_dtype(p.precision, backend.device)).removeprefix("torch.")
    return rollouts, start_rollout_engine(p, str(resolve_model(p.model)), dtype)


def load_model(p: Params, rollouts):
    """(LoRA model, tokenizer, backend); with vLLM on unsloth the engine comes with the model."""
    backend = get_backend(p.backend)
    if rollouts.uses_vllm and rollouts.unsloth:
        model, tokenizer = load_fast_inference_model(p, resolve_model(p.model))
    else:
        model, tokenizer = build_lora_model(p, backend)
    print(f"[lab] {p.model}: {trainable_parameters(model)}")
    return model, tokenizer, backend


def build_dataset(p: Params, data, tokenizer):
    """(training prompts, evaluation problems, skip report, warm-up tokens). GRPO trains on the prompts as
    they are (TRL applies the chat template; the rewards read each row's `answer`); the SFT warm-up trains
    on the same problems' worked solutions in the target layout, tokenised here."""
    train_prompts, problems, report = data
    warmup_tokens = None
    if p.sft_warmup_steps > 0:
        warmup_tokens = tokenize_dataset(worked_solution_conversations(train_prompts), tokenizer, p.max_seq_length)
    return train_prompts, problems, report, warmup_tokens


def evaluate(p: Params, model, tokenizer, problems, engine=None, base: bool = False) -> tuple[list[str], dict]:
    """Greedy answers (fixed decoding, so before and after are comparable) and their grades: by the vLLM
    engine when there is one (the adapter as it is now, or the base model), else HF generate."""
    if engine is None:
        completions = generate(model, tokenizer, problems["prompt"], max_new_tokens=p.max_new_tokens)
    else:
        if not base:
            engine.publish(model)
        completions = engine.greedy(tokenizer, problems["prompt"], p.max_new_tokens, base=base)
    return completions, grade(completions, problems)


def reward_functions(p: Params) -> list:
    """The named rewards; the overlong penalty is sized to this run's completion length."""
    sized = {"overlong_penalty": {"max_length": p.max_completion_length}}
    return [get(name, **sized.get(name, {})) for name in p.reward_names]


def grade(completions: list[str], problems) -> dict:
    """Per-problem grades, by the rewards' own extraction and numeric comparison.

    correct: the final answer is right wherever it is written (<answer>, \\boxed{}, "the answer
    is", or the last number), so a model that ignores the tags still gets credit;
    tagged: right *and* inside <answer> tags; formatted: the <reasoning>/<answer> layout.
    """
    gold = problems["answer"]
    return {
        "correct": get("correctness_any")(None, completions, answer=gold),
        "tagged": get("correctness")(None, completions, answer=gold),
        "formatted": get("soft_format")(None, completions),
    }


def share(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def accuracy(grades: dict, when: str) -> dict:
    """accuracy_<when>, tagged_accuracy_<when>, format_rate_<when>: shares of the graded problems."""
    return {f"accuracy_{when}": share(grades["correct"]), f"tagged_accuracy_{when}": share(grades["tagged"]),
            f"format_rate_{when}": share(grades["formatted"])}


def warm_up(p: Params, model, tokenizer, warmup_tokens, run, backend) -> dict:
    """Supervised steps on worked solutions in the target format (see Params), by the shared SFT loop;
    its checkpoints and logs go to <run>/sft_warmup/.

    Skipped when sft_warmup_steps is 0, and when GRPO has already saved a checkpoint (resuming loads the
    warmed-up-and-trained adapter from it).
    """
    if warmup_tokens is None or last_checkpoint(run / "checkpoints"):
        return {"sft_warmup_steps": 0, "sft_warmup_history": []}
    trainer, history = make_trainer(warmup_params(p), model, tokenizer, warmup_tokens, None, run / "sft_warmup", backend)
    outcome = train_from_last_checkpoint(trainer, run / "sft_warmup")
    losses = [r["loss"] for r in history.records if "loss" in r]
    print(f"[lab] SFT warm-up: {outcome['global_step']} steps on {len(warmup_tokens)} worked solutions, "
          f"loss {losses[0] if losses else None} -> {losses[-1] if losses else None}")
    return {"sft_warmup_steps": outcome["global_step"], "sft_warmup_rows": len(warmup_tokens),
            "sft_warmup_seconds": outcome["train_seconds"], "sft_warmup_loss_first": losses[0] if losses else None,
            "sft_warmup_loss_last": losses[-1] if losses else None, "sft_warmup_history": history.records}


def warmup_params(p: Params) -> LoraSFTParams:
    """The shared SFT loop's knobs for the warm-up: this run's LoRA/precision/bookkeeping, the warm-up's own
    steps, rate and batch (no LR ramp), and one checkpoint at its end (a resumed run need not repeat it)."""
    shared = {f.name: getattr(p, f.name) for f in fields(LoraSFTParams) if hasattr(p, f.name)}
    return LoraSFTParams(**{**shared, "max_steps": p.sft_warmup_steps, "learning_rate": p.sft_warmup_learning_rate,
                            "batch_size": p.sft_warmup_batch_size, "gradient_accumulation_steps": 1,
                            "warmup_ratio": 0.0,  # no LR ramp: in a dozen steps it would waste the first ones
                            "save_steps": max(p.sft_warmup_steps, 1), "save_total_limit": 1})


def train(p: Params, model, tokenizer, train_prompts, run, backend, rollouts, engine=None) -> dict:
    """GRPO steps (resuming from the run's last checkpoint); every logged record kept. With the lab's vLLM
    engine, TRL's rollout_func hands it each generation (the adapter being trained, published first)."""
    from trl import GRPOConfig, GRPOTrainer

    args = training_arguments(
        p, run, backend, GRPOConfig, num_generations=p.num_generations, max_completion_length=p.max_completion_length,
        temperature=p.temperature, beta=p.beta, reward_weights=[float(w) for w in p.reward_weights],
        include_num_input_tokens_seen="no",  # GRPO's batches are prompt rows, not token tensors to count
        **vllm_config_kwargs(p, rollouts, backend))
    history = LossHistory()
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=reward_functions(p), args=args,
                          train_dataset=train_prompts, callbacks=[history], optimizers=lora_plus_optimizers(p, model),
                          rollout_func=VllmRolloutFunc(engine) if engine else None)
    show_progress(trainer)  # one bar instead of a dict of strings printed per step
    outcome = train_from_last_checkpoint(trainer, run)
    if "ref" in getattr(model, "peft_config", {}):
        # TRL keeps a frozen copy of the starting adapter as the KL reference; only the trained one is the result
        model.delete_adapter("ref")
    return {**outcome, "rollouts": rollouts.engine, "history": history.records}


def all_scores(graded_before: dict, graded_warm: dict | None, graded_after: dict) -> dict:
    """accuracy/tagged_accuracy/format_rate before, after the warm-up (if any) and after GRPO."""
    warm = accuracy(graded_warm, "after_warmup") if graded_warm else {}
    return {**accuracy(graded_before, "before"), **warm, **accuracy(graded_after, "after")}


def progress_table(scores: dict) -> pd.DataFrame:
    """The scores as a table: one row per measure, one column per moment (before, after warm-up, after GRPO)."""
    moments = [m for m in ("before", "after_warmup", "after") if f"accuracy_{m}" in scores]
    return pd.DataFrame({m: [scores[f"{k}_{m}"] for k in ("format_rate", "accuracy", "tagged_accuracy")]
                         for m in moments}, index=["format_rate", "accuracy", "tagged_accuracy"])


def quarter_means(history: list[dict]) -> dict:
    """Mean total reward over the first and the last quarter of the GRPO steps: is the policy learning?"""
    rewards = [r["reward"] for r in history if "reward" in r]
    quarter = max(len(rewards) // 4, 1)
    return {"reward_first_quarter": share(rewards[:quarter]), "reward_last_quarter": share(rewards[-quarter:])}


def samples_table(problems, before: list[str], after: list[str], graded_before: dict, graded_after: dict):
    return pd.DataFrame({
        "question": [prompt[-1]["content"] for prompt in problems["prompt"]],
        "gold": problems["answer"],
        "before": before, "before_correct": graded_before["correct"],
        "after": after, "after_correct": graded_after["correct"],
    })


def save_artifacts(p: Params, run, model, tokenizer, outcome: dict, scores: dict, table, report, backend) -> dict:
    metrics = save_training_artifacts(p, run, model, tokenizer, outcome, report, backend)
    history = outcome["history"]
    rewards = [r["reward"] for r in history if "reward" in r]
    metrics.update({**scores, "reward_first": rewards[0] if rewards else None,
                    "reward_last": rewards[-1] if rewards else None, **quarter_means(history)})
    if is_main_process():  # one rank writes (DDP)
        write_table(table, run, "samples")
        plots.plot_reward_curves(history, run / "rewards.png", title=f"{p.model} GRPO")
        plots.plot_grpo_dynamics(history, run / "dynamics.png")
    finish_run(run, EXPERIMENT, metrics, headline=("accuracy_before", "accuracy_after"))
    return metrics


def run(p: Params) -> dict:
    data = load_data(p)
    rollouts, engine = start_engine(p)
    try:
        run_path = setup_run(p)
        model, tokenizer, backend = load_model(p, rollouts)
        train_prompts, problems, report, warmup_tokens = build_dataset(p, data, tokenizer)
        before, graded_before = evaluate(p, model, tokenizer, problems, engine, base=True)
        warmup = warm_up(p, model, tokenizer, warmup_tokens, run_path, backend)
        graded_warm = evaluate(p, model, tokenizer, problems, engine)[1] if warmup["sft_warmup_steps"] else None
        outcome = {**train(p, model, tokenizer, train_prompts, run_path, backend, rollouts, engine), **warmup}
        after, graded_after = evaluate(p, model, tokenizer, problems, engine)
        outcome.update(engine.stats() if engine else {})
    finally:
        if engine:
            engine.close()
    scores = all_scores(graded_before, graded_warm, graded_after)
    table = samples_table(problems, before, after, graded_before, graded_after)
    metrics = save_artifacts(p, run_path, model, tokenizer, outcome, scores, table, report, backend)
    print(f"[lab] done: {run_path}")
    return {"run_dir": str(run_path), "metrics": metrics, "samples": table}


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    m = result["metrics"]
    print(f"accuracy {m['accuracy_before']} -> {m['accuracy_after']}; {m['seconds_per_step']} s/step "
          f"({m['rollouts']} rollouts, {m['steps_trained']} steps)")


if __name__ == "__main__":
    main()
