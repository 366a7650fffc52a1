"""GRPO with LoRA on GSM8K: the model learns from rewards on its own sampled answers.

    python -m scripts.grpo_gsm8k --config configs/grpo_gsm8k.yaml
    python -m scripts.grpo_gsm8k --config configs/grpo_gsm8k.yaml --max_steps 4 --num_generations 2
    papermill notebooks/grpo_gsm8k.ipynb out.ipynb -f configs/grpo_gsm8k_gpu.yaml

Each step samples `num_generations` completions per prompt, scores each with the
reward functions of rewards/ (weighted by `reward_weights`), and pushes the policy
toward the completions that beat their group's mean (GRPO: the group is the
baseline, no value model). `beta` > 0 keeps it near the starting policy (KL term).

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

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from data_loaders.common import SkipReport, rows_left, split_heldout
from data_loaders.gsm8k import load_gsm8k, resolve_gsm8k_file, worked_solution_conversations
from lab_utils.core import plots
from lab_utils.core.artifacts import setup_logging, write_table
from lab_utils.core.backend import get_backend
from lab_utils.models.chat import generate
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.models.registry import load_tokenizer, resolve_model
from lab_utils.training.rollouts import (Rollouts, VllmRolloutFunc, choose_rollouts, load_fast_inference_model,
                                         start_rollout_engine, vllm_config_kwargs)
from lab_utils.training.lora import build_lora_model, weights_dtype
from lab_utils.training.params import AnswerParams, LoraParams, LoraSFTParams, OptimParams, RunParams
from lab_utils.training.steps import Data, LoadedModel
from lab_utils.training.trainer import build_trainer, last_checkpoint, run_trainer, train_lora, training_arguments
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.batching import load_data_tokenizer, tokenize_dataset
from lab_utils.training.lora import trainable_parameters
from lab_utils.core.errors import ParamError
from rewards import GSM8K_WEIGHTS, REWARDS, SYSTEM_PROMPT, SYSTEM_PROMPT_ZH, get

EXPERIMENT = "grpo_gsm8k"
# TRL 1.14's GRPOConfig values (trl/trainer/grpo_config.py); TRL itself only fails on an unknown one mid-training
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
SCALE_REWARDS = ("group", "batch", "none")
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
    max_completion_length: int = 64  # most tokens sampled per completion
    temperature: float = 1.0  # sampling temperature of the rollouts (variety within a group is the signal)
    beta: float = 0.0  # KL penalty toward the starting policy; 0 = none (and no reference forward pass)
    # the policy loss, TRL's (notebooks/teach_grpo_variants.ipynb runs them side by side); defaults = TRL 1.14's
    loss_type: str = "dapo"  # token losses averaged per answer (grpo), per batch (bnpo, dapo), / a constant (dr_grpo)
    importance_sampling_level: str = "token"  # policy ratio per token, or one per answer: sequence (GSPO, with grpo)
    scale_rewards: str = "group"  # advantage = (reward - group mean) / std of: group | batch | none (Dr. GRPO's choice)
    # the GSM8K recipe, plus a repetition penalty: a 135M model rarely writes a tag in 64 tokens, so the recipe
    # alone scores every completion 0 (no advantage, no gradient); the penalty varies within every group
    reward_names: list[str] = field(  # rewards (rewards.REWARDS names) summed into each completion's score
        default_factory=lambda: [*GSM8K_WEIGHTS, "repetition_penalty"])
    reward_weights: list[float] = field(  # one weight per reward_names entry
        default_factory=lambda: [*GSM8K_WEIGHTS.values(), 0.5])
    # rollouts
    rollouts: str = "auto"  # auto (vLLM wherever it is installed: make setup-vllm) | vllm | hf
    vllm_gpu_memory_utilization: float = 0.5  # vLLM's share of the GPU; training gets the rest
    # SFT warm-up before GRPO (0 steps = none). A 135M model almost never writes the <reasoning>/<answer>
    # layout by itself, so every completion of a group scores the same and GRPO has nothing to compare; a few
    # supervised steps on worked solutions written in that layout (the training prompts' gold solutions) make
    # formatted answers *possible*, and GRPO then makes them *likely* (Unsloth's GRPO notebooks prime the
    # format the same way). The warm-up reuses the SFT loop of lab_utils/training/.
    sft_warmup_steps: int = 16  # supervised steps on worked solutions first (0 = none); 16 = ~2.5 passes over 25
    sft_warmup_learning_rate: float = 8e-4  # learning rate of the warm-up
    sft_warmup_batch_size: int = 4  # worked solutions per warm-up step
    # GRPO's defaults differ from SFT's: hard clipping (RL gradients are noisy), a rate high enough for
    # the CPU demo's dozen steps to show movement
    learning_rate: float = 1e-4  # peak learning rate of the GRPO steps
    batch_size: int = 4  # completions per device step; prompts per step = batch_size / num_generations
    max_steps: int = 8
    max_grad_norm: float = 0.1
    save_steps: int = 8
    max_seq_length: int = 512  # context of the unsloth/vLLM model: prompt + completion
    max_new_tokens: int = 64  # greedy answer length for the before/after accuracy


# Every experiment has the same steps, in this order (tests/test_experiment_steps.py checks it):
# load_data, build_dataset, setup_run, load_model, evaluate, train, save_artifacts, run, main.

def check_params(p: Params) -> None:
    """Mistakes that would otherwise surface as an assertion deep inside TRL."""
    unknown = [name for name in p.reward_names if name not in REWARDS]
    if unknown:
        raise ParamError(f"reward_names: unknown {unknown}; registered rewards: {', '.join(sorted(REWARDS))}")
    if len(p.reward_names) != len(p.reward_weights):
        raise ParamError(f"reward_names has {len(p.reward_names)} entries but reward_weights {len(p.reward_weights)}")
    if p.num_generations < 2:
        raise ParamError("num_generations must be at least 2: GRPO compares completions within a group")
    if (p.batch_size * p.gradient_accumulation_steps) % p.num_generations:
        raise ParamError(f"batch_size * gradient_accumulation_steps ({p.batch_size * p.gradient_accumulation_steps}) "
                         f"must be a multiple of num_generations ({p.num_generations})")
    if p.prompt_language not in SYSTEM_PROMPTS:
        raise ParamError(f"prompt_language={p.prompt_language!r}: expected one of {sorted(SYSTEM_PROMPTS)}")
    for name, allowed in (("loss_type", LOSS_TYPES), ("importance_sampling_level", IMPORTANCE_SAMPLING_LEVELS),
                          ("scale_rewards", SCALE_REWARDS)):
        if getattr(p, name) not in allowed:
            raise ParamError(f"{name}={getattr(p, name)!r}: expected one of {', '.join(allowed)}")


@dataclass
class GrpoData(Data):
    warmup: Any = None  # the SFT warm-up's worked solutions as tokens (None: no warm-up)


@dataclass
class GrpoModel(LoadedModel):
    rollouts: Rollouts | None = None  # who samples the completions: vLLM or HF generate
    engine: Any = None  # the lab's vLLM engine (rollouts and grading); None for HF generate and Unsloth's vLLM


class Graded(NamedTuple):
    answers: list[str]  # greedy completions, one per problem
    grades: dict  # correct / tagged / formatted per problem (see grade)


def load_data(p: Params) -> GrpoData:
    """Training prompts and held-out problems (`heldout`), checked before any run folder exists.

    The model's tokenizer (not the model) is loaded here: prompts longer than max_prompt_length
    tokens are skipped and reported.
    """
    check_params(p)
    report = SkipReport()
    tokenizer = load_tokenizer(resolve_model(p.model), p.trust_remote_code)
    options = dict(system_prompt=SYSTEM_PROMPTS[p.prompt_language], tokenizer=tokenizer,
                   max_prompt_length=p.max_prompt_length, report=report)
    train_prompts = load_gsm8k(p.data_file, split_file="train.jsonl", limit=p.max_rows or None, **options)
    if p.eval_file:
        problems = load_gsm8k(p.eval_file, split_file="test.jsonl", limit=p.heldout_rows, **options)
    else:
        path = resolve_gsm8k_file(p.data_file, "train.jsonl")
        train_prompts, problems = split_heldout(train_prompts, p.heldout_rows, p.seed, path)
    print(f"[lab] {p.data_file}: {report.summary()}; {len(train_prompts)} train prompts, {len(problems)} eval problems")
    return GrpoData(train=train_prompts, heldout=problems, report=report)


def build_dataset(p: Params, data: GrpoData) -> GrpoData:
    """GRPO trains on the prompts as they are (TRL applies the chat template; the rewards read each row's
    `answer`); the SFT warm-up trains on the same problems' worked solutions in the target layout,
    tokenised here by the model's tokenizer, before any run folder exists."""
    if p.sft_warmup_steps <= 0:
        return data
    tokenizer = load_data_tokenizer(p)
    warmup = rows_left(tokenize_dataset(worked_solution_conversations(data.train), tokenizer, p.max_seq_length),
                       resolve_gsm8k_file(p.data_file, "train.jsonl"),
                       f"tokenizing the warm-up's worked solutions (all beyond max_seq_length={p.max_seq_length})",
                       "raise max_seq_length or set sft_warmup_steps: 0")
    return replace(data, warmup=warmup)


def setup_run(p: Params) -> Path:
    return open_run(EXPERIMENT, p)


def start_engine(p: Params) -> tuple[Rollouts, Any]:
    """(rollouts, the lab's vLLM engine or None), before the run folder exists: vLLM missing, no room for
    its KV cache or an architecture it cannot serve stop the run in one line and leave nothing behind.
    The engine samples the rollouts (through TRL's rollout_func) and writes the graded greedy answers."""
    backend = get_backend(p.backend)
    rollouts = choose_rollouts(p.rollouts, backend)
    print(f"[lab] rollouts: {rollouts.engine} ({rollouts.reason})", flush=True)
    if not rollouts.lab_engine:
        return rollouts, None
    dtype = str(weights_dtype(p.precision, backend.device)).removeprefix("torch.")
    return rollouts, start_rollout_engine(p, str(resolve_model(p.model)), dtype)


def load_model(p: Params, rollouts: Rollouts | None = None, engine=None) -> GrpoModel:
    """The LoRA model, tokenizer, backend and rollouts (chosen here when not given); with vLLM on unsloth
    the engine comes with the model, the lab's own engine (start_engine) is passed in."""
    backend = get_backend(p.backend)
    rollouts = rollouts or choose_rollouts(p.rollouts, backend)
    if rollouts.uses_vllm and rollouts.unsloth:
        model, tokenizer = load_fast_inference_model(p, resolve_model(p.model))
    else:
        model, tokenizer = build_lora_model(p, backend)
    print(f"[lab] {p.model}: {trainable_parameters(model)}")
    return GrpoModel(model, tokenizer, backend, rollouts, engine)


def evaluate(p: Params, lm: GrpoModel, data: GrpoData, base: bool = False) -> Graded:
    """Greedy answers to the held-out problems (fixed decoding, so before and after are comparable), graded:
    by the vLLM engine when there is one (the adapter as it is now, or the base model), else HF generate."""
    if lm.engine is None:
        completions = generate(lm.model, lm.tokenizer, data.heldout["prompt"], max_new_tokens=p.max_new_tokens)
    else:
        if not base:
            lm.engine.publish(lm.model)
        completions = lm.engine.greedy(lm.tokenizer, data.heldout["prompt"], p.max_new_tokens, base=base)
    return Graded(completions, grade(completions, data.heldout))


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


def warm_up(p: Params, lm: GrpoModel, data: GrpoData, run_dir: Path) -> dict:
    """Supervised steps on worked solutions in the target format (see Params), by the shared SFT loop;
    its checkpoints and logs go to <run_dir>/sft_warmup/.

    Skipped when sft_warmup_steps is 0, and when GRPO has already saved a checkpoint (resuming loads the
    warmed-up-and-trained adapter from it).
    """
    if data.warmup is None or last_checkpoint(run_dir / "checkpoints"):
        return {"sft_warmup_steps": 0, "sft_warmup_history": []}
    outcome = train_lora(warmup_params(p), lm.model, lm.tokenizer, data.warmup, None, run_dir / "sft_warmup",
                         lm.backend)
    losses = [r["loss"] for r in outcome["history"] if "loss" in r]
    print(f"[lab] SFT warm-up: {outcome['global_step']} steps on {len(data.warmup)} worked solutions, "
          f"loss {losses[0] if losses else None} -> {losses[-1] if losses else None}")
    return {"sft_warmup_steps": outcome["global_step"], "sft_warmup_rows": len(data.warmup),
            "sft_warmup_seconds": outcome["train_seconds"], "sft_warmup_loss_first": losses[0] if losses else None,
            "sft_warmup_loss_last": losses[-1] if losses else None, "sft_warmup_history": outcome["history"]}


def warmup_params(p: Params) -> LoraSFTParams:
    """The shared SFT loop's knobs for the warm-up: this run's LoRA/precision/bookkeeping, the warm-up's own
    steps, rate and batch (no LR ramp), and one checkpoint at its end (a resumed run need not repeat it)."""
    shared = {f.name: getattr(p, f.name) for f in fields(LoraSFTParams) if hasattr(p, f.name)}
    return LoraSFTParams(**{**shared, "max_steps": p.sft_warmup_steps, "learning_rate": p.sft_warmup_learning_rate,
                            "batch_size": p.sft_warmup_batch_size, "gradient_accumulation_steps": 1,
                            "warmup_ratio": 0.0,  # no LR ramp: in a dozen steps it would waste the first ones
                            "save_steps": max(p.sft_warmup_steps, 1), "save_total_limit": 1})


def train(p: Params, lm: GrpoModel, data: GrpoData, run_dir: Path) -> dict:
    """GRPO steps (resuming from the run's last checkpoint); every logged record kept. With the lab's vLLM
    engine, TRL's rollout_func hands it each generation (the adapter being trained, published first)."""
    from trl import GRPOConfig, GRPOTrainer

    args = training_arguments(
        p, run_dir, lm.backend, GRPOConfig, num_generations=p.num_generations,
        max_completion_length=p.max_completion_length, temperature=p.temperature, beta=p.beta,
        reward_weights=[float(w) for w in p.reward_weights],
        loss_type=p.loss_type, importance_sampling_level=p.importance_sampling_level, scale_rewards=p.scale_rewards,
        include_num_input_tokens_seen="no",  # GRPO's batches are prompt rows, not token tensors to count
        **vllm_config_kwargs(p, lm.rollouts, lm.backend))
    trainer, history = build_trainer(p, GRPOTrainer, lm.model, args, data.train, processing_class=lm.tokenizer,
                                     reward_funcs=reward_functions(p),
                                     rollout_func=VllmRolloutFunc(lm.engine) if lm.engine else None)
    outcome = run_trainer(p, trainer, history, run_dir, loss_before_after=False)
    return {**outcome, "rollouts": lm.rollouts.engine}


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


def samples_table(problems, before: Graded, after: Graded) -> pd.DataFrame:
    return pd.DataFrame({
        "question": [prompt[-1]["content"] for prompt in problems["prompt"]],
        "gold": problems["answer"],
        "before": before.answers, "before_correct": before.grades["correct"],
        "after": after.answers, "after_correct": after.grades["correct"],
    })


def save_artifacts(p: Params, run_dir: Path, lm: GrpoModel, data: GrpoData, outcome: dict, scores: dict,
                   table: pd.DataFrame) -> dict:
    metrics = save_training_artifacts(p, run_dir, lm.model, lm.tokenizer, outcome, data.report, lm.backend)
    history = outcome["history"]
    rewards = [r["reward"] for r in history if "reward" in r]
    metrics.update({**scores, "reward_first": rewards[0] if rewards else None,
                    "reward_last": rewards[-1] if rewards else None, **quarter_means(history)})
    if is_main_process():  # one rank writes (DDP)
        write_table(table, run_dir, "samples")
        plots.plot_reward_curves(history, run_dir / "rewards.png", title=f"{p.model} GRPO")
        plots.plot_grpo_dynamics(history, run_dir / "dynamics.png")
    finish_run(run_dir, EXPERIMENT, metrics, headline=("accuracy_before", "accuracy_after"))
    return metrics


def run(p: Params) -> dict:
    data = build_dataset(p, load_data(p))
    rollouts, engine = start_engine(p)
    try:
        run_dir = setup_run(p)
        lm = load_model(p, rollouts, engine)
        before = evaluate(p, lm, data, base=True)
        warmup = warm_up(p, lm, data, run_dir)
        warm = evaluate(p, lm, data) if warmup["sft_warmup_steps"] else None
        outcome = {**train(p, lm, data, run_dir), **warmup}
        after = evaluate(p, lm, data)
        outcome.update(engine.stats() if engine else {})
    finally:
        if engine:
            engine.close()
    scores = all_scores(before.grades, warm.grades if warm else None, after.grades)
    table = samples_table(data.heldout, before, after)
    metrics = save_artifacts(p, run_dir, lm, data, outcome, scores, table)
    print(f"[lab] done: {run_dir}")
    return {"run_dir": str(run_dir), "metrics": metrics, "samples": table}


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    m = result["metrics"]
    print(f"accuracy {m['accuracy_before']} -> {m['accuracy_after']}; {m['seconds_per_step']} s/step "
          f"({m['rollouts']} rollouts, {m['steps_trained']} steps)")


if __name__ == "__main__":
    main()
