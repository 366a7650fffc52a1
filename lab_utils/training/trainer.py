"""Training glue shared by the SFT experiments: model + LoRA, batching, the trainer.

Two backends (lab_utils/backend.py):
  unsloth  FastLanguageModel (4/16-bit LoRA, Unsloth gradient checkpointing) on CUDA
  hf       transformers + peft, the same LoRA options, on CPU or a GPU without unsloth

Batching. The default on the hf backend is *padding-free*: a batch's
conversations are laid end to end in one row, position ids restart at 0 for
each, and transformers builds a block-diagonal causal mask from them (sdpa), so
no token attends across conversations and no compute goes to padding. The loss
head is applied only at positions whose next token is a label (assistant
tokens), which skips the 49k-wide vocabulary projection for prompts. "padded"
is the classic alternative (right padding, attention mask, batches grouped by
length); the unsloth backend uses it with its own fused loss.
"""

import json
import os
import time
from pathlib import Path
import torch
from transformers import Trainer, TrainerCallback
from lab_utils.core.backend import Backend
from lab_utils.core.distributed import launched_distributed
from lab_utils.core.progress import show_progress
from lab_utils.training.batching import ChatCollator
from lab_utils.training.checkpoints import newest_whole_checkpoint
from lab_utils.training.lora import resolve_precision
from lab_utils.training.loss import LabTrainer
from lab_utils.training.params import EvalParams
from lab_utils.core.errors import ConfigError, ParamError


class LossHistory(TrainerCallback):
    """Keeps every logged train/eval record (loss, learning rate, step) for plots and metrics."""

    def __init__(self):
        self.records = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.records.append({"step": state.global_step, **logs})


def evaluate_before_training(trainer) -> float:
    """Eval loss of the untrained model, without breaking DDP for the train() that follows.

    accelerate 1.15 marks a model that Trainer.evaluate() prepared (for evaluation only) as
    prepared for good, so a later train() skips the DistributedDataParallel wrapper and every
    rank silently trains its own copy (seen under torchrun: the ranks' adapters diverged).
    Dropping that mark after the evaluation lets train() wrap the model as usual.
    """
    loss = trainer.evaluate()["eval_loss"]
    if launched_distributed() and getattr(trainer.model, "_is_accelerate_prepared", False):
        del trainer.model._is_accelerate_prepared
    return loss


class EvalAtTrainBegin(TrainerCallback):
    """The eval loss before the first step, measured on the model train() has just sharded."""

    def __init__(self, trainer):
        self.trainer, self.loss = trainer, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.loss = self.trainer.evaluate()["eval_loss"]


def evaluate_then_train(trainer, run_dir: Path, evaluate_first: bool = True) -> tuple:
    """(eval loss before training or None, train_from_last_checkpoint's outcome).

    Under FSDP2 accelerate cannot prepare the model for evaluation alone (it wants the optimizer
    with it: transformers 5.17's evaluate() before train() raises), and an unsharded full copy
    is what FSDP is there to avoid; so the loss "before" is measured once train() has sharded
    the model, before its first step (on a resumed run: the checkpoint's loss).
    """
    if not evaluate_first:
        return None, train_from_last_checkpoint(trainer, run_dir)
    if getattr(trainer, "is_fsdp_enabled", False):
        first = EvalAtTrainBegin(trainer)
        trainer.add_callback(first)
        outcome = train_from_last_checkpoint(trainer, run_dir)
        return first.loss, outcome
    eval_before = evaluate_before_training(trainer)
    return eval_before, train_from_last_checkpoint(trainer, run_dir)


def last_checkpoint(output_dir) -> str | None:
    """The newest whole checkpoint to resume from (damaged ones skipped with a line; lab_utils/training/checkpoints)."""
    return newest_whole_checkpoint(output_dir)


def training_arguments(p, run_dir: Path, backend: Backend, args_class=None, **method_args):
    """The one place Params become TrainingArguments (or a TRL config: SFTConfig, GRPOConfig, DPOConfig).

    `p` has the shared groups (RunParams, LoraParams, OptimParams; EvalParams where the experiment
    evaluates during training). `method_args` are the method's own fields (GRPO's num_generations,
    DPO's beta, ...) and win over the shared ones.
    """
    from transformers import TrainingArguments

    if not 0 <= p.warmup_ratio < 1:
        raise ParamError(f"warmup_ratio={p.warmup_ratio}: expected a share of the steps in [0, 1)")
    # transformers 5 reads the TensorBoard folder from the environment only
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    if p.report_to == "swanlab":
        start_swanlab(run_dir)
    precision = resolve_precision(p.precision, backend.device)
    shared = dict(
        output_dir=str(run_dir / "checkpoints"), seed=p.seed, data_seed=p.seed,
        per_device_train_batch_size=p.batch_size, per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, learning_rate=p.learning_rate,
        # max_steps 0 means "train num_train_epochs"; transformers spells that -1
        max_steps=p.max_steps if p.max_steps > 0 else -1, num_train_epochs=p.num_train_epochs,
        # transformers 5 has no warmup_ratio: a float in [0, 1) given as warmup_steps is a share of the steps
        warmup_steps=p.warmup_ratio, lr_scheduler_type=p.lr_scheduler_type, weight_decay=p.weight_decay,
        max_grad_norm=p.max_grad_norm, optim=p.optim, bf16=precision == "bf16", fp16=precision == "fp16",
        # Unsloth brings its own offloaded checkpointing, switched on when it loaded the model
        gradient_checkpointing=p.gradient_checkpointing and not backend.is_unsloth,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=p.logging_steps, save_steps=p.save_steps, save_total_limit=p.save_total_limit,
        report_to=[] if p.report_to == "none" else [p.report_to],
        remove_unused_columns=False,  # the lab's collators need columns the model's forward does not name
        use_cpu=backend.device == "cpu", dataloader_num_workers=0, disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        **(evaluation_arguments(p) if isinstance(p, EvalParams) else {}),
    )
    return (args_class or TrainingArguments)(**{**shared, **method_args})


TRACKERS = {"wandb": "wandb", "swanlab": "swanlab"}  # report_to -> the package it needs (tensorboard is core)


def check_report_to(report_to: str) -> None:
    """A tracker that is not installed stops here, before a run folder exists (transformers would fail later)."""
    import importlib.util

    package = TRACKERS.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"report_to={report_to!r} needs the {package} package, not installed here "
                         f"(make setup-trackers installs swanlab; pip install wandb); or report_to: tensorboard | none")


def swanlab_mode() -> str:
    """offline (the log stays in the run folder) unless SWANLAB_API_KEY is set: then online, to the cloud too."""
    return "online" if os.environ.get("SWANLAB_API_KEY") else "offline"


def start_swanlab(run: Path) -> str:
    """Opens the SwanLab run, logging into <run>/swanlog in swanlab_mode(); returns the mode. An offline log
    uploads later with `swanlab sync <run>/swanlog/run-...`. The key is only read from the environment.

    The lab opens the run itself: transformers 5.17's SwanLabCallback asks `swanlab.get_run() is None`, which
    swanlab >= 0.8 answers with an exception when no run is open; with one open, the callback logs into it."""
    import swanlab

    mode = swanlab_mode()
    if not swanlab.has_run():
        swanlab.init(project=os.environ.get("SWANLAB_PROJECT", "finetune-lab"), experiment_name=run.name,
                     mode=mode, log_dir=str(run / "swanlog"))
    return mode


def finish_trackers() -> None:
    """Close an open SwanLab run: transformers never does, so the next run in this process would log into it."""
    import sys

    swanlab = sys.modules.get("swanlab")
    if swanlab is not None and swanlab.has_run():
        swanlab.finish()


def evaluation_arguments(p) -> dict:
    """Eval loss every eval_steps (else only before and after training), and the best checkpoint kept."""
    if p.load_best and p.eval_steps <= 0:
        raise ParamError("load_best=true needs eval_steps > 0: the best checkpoint is chosen by its eval loss")
    if p.load_best and p.save_steps % p.eval_steps:
        raise ParamError(f"load_best=true needs save_steps ({p.save_steps}) to be a multiple of "
                         f"eval_steps ({p.eval_steps}): only evaluated checkpoints can be the best")
    best = dict(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    return dict(eval_strategy="steps" if p.eval_steps > 0 else "no", eval_steps=p.eval_steps or None,
                prediction_loss_only=True, **(best if p.load_best else {}))


def lora_plus_optimizers(p, model) -> tuple:
    """(optimizer, scheduler) for Trainer: LoRA+ when loraplus_lr_ratio > 0, else Trainer's own (None, None)."""
    if p.loraplus_lr_ratio <= 0:
        return None, None
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=p.learning_rate,
                                     loraplus_lr_ratio=p.loraplus_lr_ratio, weight_decay=p.weight_decay), None


class SampleAnswers(TrainerCallback):
    """After each evaluation during training, answers a few held-out prompts: what the loss curve means."""

    def __init__(self, answer):
        self.answer = answer  # () -> list[str]
        self.records = []

    def on_evaluate(self, args, state, control, **kwargs):
        self.records.append({"step": state.global_step, "answers": self.answer()})


def sample_answers_during_training(trainer, p, answer) -> list:
    """With eval_steps > 0, `answer()` runs at every evaluation; returns the list its records go to."""
    if p.eval_steps <= 0:
        return []
    samples = SampleAnswers(answer)
    trainer.add_callback(samples)
    return samples.records


def capped_rows(dataset, rows: int):
    """The first `rows` rows of a (shuffled) held-out set, all of them when rows is 0: on a CPU an eval
    loss over hundreds of long rows takes longer than the training it measures."""
    if dataset is None or rows <= 0 or len(dataset) <= rows:
        return dataset
    return dataset.select(range(rows))


def build_trainer(p, trainer_class, model, args, train_dataset, eval_dataset=None, **trainer_kwargs):
    """(trainer, LossHistory) for every training kind (text SFT, vision SFT, GRPO, DPO/ORPO): the loss
    history, one progress bar, LoRA+ optimizers, the eval set capped at eval_loss_rows."""
    history = LossHistory()
    trainer = trainer_class(model=model, args=args, train_dataset=train_dataset,
                            eval_dataset=capped_rows(eval_dataset, getattr(p, "eval_loss_rows", 0)),
                            callbacks=[history], optimizers=lora_plus_optimizers(p, model), **trainer_kwargs)
    show_progress(trainer)  # one bar instead of a dict of strings printed per step
    return trainer, history


def drop_reference_adapter(model) -> None:
    """TRL's DPO and GRPO keep a frozen copy of the starting adapter, named `ref`, as their reference;
    only the trained adapter is the run's result."""
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")


def run_trainer(p, trainer, history, run_dir: Path, answer=None, loss_before_after: bool = True) -> dict:
    """Train (resumed from the run's last checkpoint) with the eval loss before and after when the trainer
    has an eval set, `answer()` sampled at each evaluation during training (eval_steps > 0); the outcome
    every experiment records, with the loss history."""
    samples = sample_answers_during_training(trainer, p, answer) if answer else []
    with_eval = loss_before_after and trainer.eval_dataset is not None
    eval_before, outcome = evaluate_then_train(trainer, run_dir, evaluate_first=with_eval)
    eval_after = trainer.evaluate()["eval_loss"] if with_eval else None
    drop_reference_adapter(trainer.model)
    losses = {"eval_loss_before": eval_before, "eval_loss_after": eval_after} if loss_before_after else {}
    return {**outcome, **losses, "history": history.records, "samples_during_training": samples}


def make_trainer(p, model, tokenizer, train_tokens, eval_tokens, run_dir: Path, backend: Backend):
    """(trainer, LossHistory) for text SFT: the lab's batching and label-only loss, optional LoRA+."""
    padding_free = p.batching == "padding_free" and not backend.is_unsloth
    args = training_arguments(p, run_dir, backend, prediction_loss_only=True,
                              train_sampling_strategy="group_by_length" if p.batching == "padded" else "random")
    trainer_class = Trainer if backend.is_unsloth else LabTrainer  # unsloth brings its own fused loss
    return build_trainer(p, trainer_class, model, args, train_tokens, eval_tokens, processing_class=tokenizer,
                         data_collator=ChatCollator(tokenizer.pad_token_id, padding_free=padding_free))


def tokens_seen_at(checkpoint: str | None) -> int:
    """Real (non-padding) input tokens a checkpoint had trained on; 0 for a fresh run."""
    if not checkpoint:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("num_input_tokens_seen", 0))


def tokens_per_second(tokens: int, seconds: float) -> float | None:
    """This session's real tokens per second of trainer.train(). transformers puts
    train_tokens_per_second only in each step's log record, not in train()'s final metrics."""
    return round(tokens / seconds, 1) if tokens > 0 and seconds > 0 else None


def train_from_last_checkpoint(trainer, run_dir: Path) -> dict:
    """trainer.train(), resuming from the run's last checkpoint; the numbers every experiment records."""
    resume = last_checkpoint(run_dir / "checkpoints")
    if resume:
        print(f"[lab] resuming from {resume}")
    first_step = int(resume.rsplit("-", 1)[1]) if resume else 0
    tokens_before = tokens_seen_at(resume)  # read now: save_total_limit may delete that checkpoint while training
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    steps = trainer.state.global_step - first_step
    tokens = trainer.state.num_input_tokens_seen  # non-padding input tokens, checkpoints included
    return {
        "train_loss": result.training_loss, "global_step": trainer.state.global_step, "steps_trained": steps,
        "resumed_from": resume, "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps, 2) if steps else None, "tokens_seen": tokens,
        "train_tokens_per_second": tokens_per_second(tokens - tokens_before, seconds),
        "best_checkpoint": trainer.state.best_model_checkpoint,  # with load_best (else None)
    }


def train_lora(p, model, tokenizer, train_tokens, eval_tokens, run_dir: Path, backend: Backend,
               sample_conversations=None) -> dict:
    """Text SFT: eval loss before, training (resumed if possible), eval loss after.

    With eval_steps > 0 the held-out loss is also logged every eval_steps, and the first
    held-out conversations (`sample_conversations`) are answered at each of those points.
    """
    from lab_utils.models.chat import generate

    trainer, history = make_trainer(p, model, tokenizer, train_tokens, eval_tokens, run_dir, backend)
    return run_trainer(p, trainer, history, run_dir, answer=lambda: generate(
        model, tokenizer, sample_conversations or [], max_new_tokens=p.max_new_tokens))
