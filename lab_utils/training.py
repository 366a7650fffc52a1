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
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from lab_utils.backend import Backend, choose_backend, import_unsloth
from lab_utils.chat import IGNORE_INDEX, count_trainable_tokens, tokenize_conversation
from lab_utils.distributed import is_main_process, launched_distributed, local_rank, main_process_first
from lab_utils.models import load_tokenizer, lora_target_modules, resolve_model
from lab_utils.progress import show_progress


# ---------------------------------------------------------------- the shared Params field groups
# Every training experiment's Params is composed of these three groups (plus its own data and
# method fields), so a knob has one name, one default and one meaning everywhere: configs,
# notebooks and the batch runner speak one vocabulary. Defaults are the CPU demo's; an
# experiment overrides a default by redeclaring the field in its own Params.

@dataclass(kw_only=True)
class RunParams:
    """Which model, which backend, where the run goes and what it logs."""

    model: str = "smollm2-135m"  # registry name, local folder or hub id
    backend: str = "auto"  # auto | hf | unsloth (LAB_BACKEND forces one too)
    seed: int = 42
    run_name: str = "demo"  # the run folder: $LAB_OUTPUT_DIR/<experiment>/<run_name>/
    overwrite: bool = False  # a finished run with this name is refused unless true
    report_to: str = "tensorboard"  # tensorboard | wandb | swanlab | none
    logging_steps: int = 1
    save_steps: int = 10  # checkpoint every N steps: an interrupted run resumes from the last one
    save_total_limit: int = 2


@dataclass(kw_only=True)
class LoraParams:
    """The LoRA adapter and how the frozen base is stored."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    use_rslora: bool = False  # scale by alpha/sqrt(r): stabler at large r
    use_dora: bool = False  # weight-decomposed LoRA (slower, sometimes better)
    loraplus_lr_ratio: float = 0.0  # > 0: LoRA+ (B learns this many times faster than A)
    load_in_4bit: bool = False  # QLoRA (GPU only)
    load_in_8bit: bool = False


@dataclass(kw_only=True)
class OptimParams:
    """The optimiser, the schedule and the numeric precision."""

    learning_rate: float = 2e-4
    batch_size: int = 8  # per device
    gradient_accumulation_steps: int = 1
    max_steps: int = 30  # > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0
    warmup_ratio: float = 0.1  # share of the steps spent ramping the learning rate up, in [0, 1)
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"  # adamw_8bit on a GPU saves optimizer memory (bitsandbytes)
    precision: str = "auto"  # auto (bf16 where native, CPU included) | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False


@dataclass(kw_only=True)
class EvalParams:
    """Held-out evaluation during training (the experiments that have an eval loss)."""

    eval_steps: int = 0  # > 0: eval loss (+ sample answers) every N steps; 0: before and after training only
    load_best: bool = False  # end with the checkpoint of lowest eval loss (needs eval_steps > 0)
    max_new_tokens: int = 48  # length of the generated answers shown before/after (and during) training


@dataclass(kw_only=True)
class LoraSFTParams(RunParams, LoraParams, OptimParams, EvalParams):
    """Every text SFT experiment's knobs: the shared groups plus sequence length, targets and batching."""

    max_seq_length: int = 256
    lora_mlp: bool = True  # also adapt gate/up/down projections
    batching: str = "padding_free"  # padding_free | padded (length-grouped)


class EmptyBatchError(ValueError):
    """A batch in which every label is masked: nothing to learn, and a NaN loss if trained on."""


# ---------------------------------------------------------------- model + LoRA

def resolve_precision(precision: str, device: str) -> str:
    """auto -> bf16 where the hardware does bf16 math natively, fp16 on older GPUs, else fp32.

    On a CPU with AVX512-BF16 (or AMX), bf16 autocast measured ~1.8x the fp32 training
    throughput of the embedded model (benchmarks/sft_throughput.py) at the same loss.
    """
    if precision != "auto":
        if precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision={precision!r}: expected auto, bf16, fp16 or fp32")
        return precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "fp32"


def weights_dtype(precision: str, device: str):
    """The dtype frozen base weights are loaded in. On CPU they stay fp32 and bf16 comes
    from autocast (TrainingArguments.bf16), which keeps LoRA's updates in full precision."""
    if device == "cpu":
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[resolve_precision(precision, device)]


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, device: str):
    """bitsandbytes QLoRA config (GPU only: bitsandbytes kernels are CUDA kernels)."""
    if not (load_in_4bit or load_in_8bit):
        return None
    if device != "cuda":
        raise RuntimeError("load_in_4bit/load_in_8bit (QLoRA) need a CUDA GPU; set both to false on CPU")
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=weights_dtype("auto", device))


def lora_kwargs(p) -> dict:
    return dict(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout, use_rslora=p.use_rslora)


def load_model(p, backend: Backend):
    """(model with LoRA attached, tokenizer) for Params with the shared LoRA/precision fields."""
    source = resolve_model(p.model)
    if backend.is_unsloth:
        return load_unsloth_model(p, source)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(source)
    quant = quantization_config(p.load_in_4bit, p.load_in_8bit, backend.device)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=weights_dtype(p.precision, backend.device), quantization_config=quant,
        # one whole copy per process: under DDP each rank's copy on its own GPU
        device_map={"": local_rank()} if backend.device == "cuda" else None, attn_implementation="sdpa",
    )
    model.config.use_cache = False  # a KV cache in training disables the packed-sequence mask
    # QLoRA without peft's prepare_model_for_kbit_training: it casts every weight that is not quantised
    # (embeddings, lm_head, norms) to fp32. With Qwen2.5's 152k vocabulary that is +0.47 GB (1.5B, tied)
    # to +2.2 GB (7B) of frozen weights, and under bf16 autocast the fp32 head is cast back to a bf16 copy
    # on every forward. Frozen weights stay in the compute dtype; the LoRA weights are fp32 anyway
    # (get_peft_model's autocast_adapter_dtype); checkpointing needs only what follows.
    if p.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(task_type="CAUSAL_LM", target_modules=lora_target_modules(model, p.lora_mlp),
                        use_dora=p.use_dora, **lora_kwargs(p))
    return get_peft_model(model, config), tokenizer


def load_unsloth_model(p, source: str, **engine):
    """Unsloth FastLanguageModel + LoRA. `engine`: extra from_pretrained options, e.g. the vLLM
    engine for GRPO rollouts (lab_utils.rollouts.load_fast_inference_model)."""
    import_unsloth()
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=p.max_seq_length, dtype=None,
        load_in_4bit=p.load_in_4bit, load_in_8bit=p.load_in_8bit, **engine,
    )
    model = FastLanguageModel.get_peft_model(
        model, target_modules=lora_target_modules(model, p.lora_mlp), bias="none",
        use_gradient_checkpointing="unsloth" if p.gradient_checkpointing else False,
        random_state=p.seed, use_dora=p.use_dora, **lora_kwargs(p),
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def trainable_parameters(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "percent": round(100 * trainable / total, 3)}


# ---------------------------------------------------------------- data

def tokenize_dataset(dataset, tokenizer, max_length: int, report=None):
    """Tokenize conversations; drop (and report) rows whose answer lies beyond max_length."""
    def encode(row):
        encoded = tokenize_conversation(tokenizer, row["messages"], max_length)
        encoded["length"] = len(encoded["input_ids"])
        encoded["n_labels"] = count_trainable_tokens(encoded["labels"])
        return encoded

    tokenized = dataset.map(encode, remove_columns=[c for c in dataset.column_names if c != "source"])
    empty = [i for i, n in enumerate(tokenized["n_labels"]) if n == 0]
    if report is not None:
        for i in empty:
            report.skip(tokenized[i]["source"], None, "answer beyond max_seq_length", f"max_seq_length={max_length}")
        report.kept -= len(empty)
    return tokenized.filter(lambda row: row["n_labels"] > 0)


@dataclass
class ChatCollator:
    """Batches tokenized conversations, padding-free (one packed row) or right-padded."""

    pad_token_id: int
    padding_free: bool = True
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict]) -> dict:
        if all(count_trainable_tokens(r["labels"]) == 0 for r in rows):
            raise EmptyBatchError("every label in this batch is masked (no assistant tokens); check the data and max_seq_length")
        return self.packed(rows) if self.padding_free else self.padded(rows)

    def packed(self, rows):
        ids, labels, positions = [], [], []
        for r in rows:
            ids += r["input_ids"]
            # the first token of each conversation must not be predicted from the previous one
            labels += [IGNORE_INDEX] + list(r["labels"][1:])
            positions += list(range(len(r["input_ids"])))
        as_row = lambda xs: torch.tensor([xs], dtype=torch.long)  # noqa: E731
        return {"input_ids": as_row(ids), "labels": as_row(labels), "position_ids": as_row(positions)}

    def padded(self, rows):
        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        def pad(xs, value):
            return list(xs) + [value] * (longest - len(xs))
        return {
            "input_ids": torch.tensor([pad(r["input_ids"], self.pad_token_id) for r in rows]),
            "labels": torch.tensor([pad(r["labels"], IGNORE_INDEX) for r in rows]),
            "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
        }


# ---------------------------------------------------------------- loss + trainer

def label_positions(labels: torch.Tensor):
    """(batch, position) indices whose *next* token is a label, and those next tokens."""
    next_labels = labels[:, 1:]
    keep = next_labels != IGNORE_INDEX
    rows, cols = keep.nonzero(as_tuple=True)
    return rows, cols, next_labels[rows, cols]


# Logits per loss chunk: 2**26 of them is 256 MiB in fp32 (~440 label positions of a 152k vocabulary).
LOSS_CHUNK_LOGITS = 2**26


def token_losses(model, batch: dict, chunk_logits: int = LOSS_CHUNK_LOGITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label-token cross-entropy; full-vocabulary logits exist only for a chunk of label positions at a time.

    Returns (losses, row_index_of_each_loss). The model runs to its last hidden state
    (`logits_to_keep=1`: no logits for the sequence), the hidden states at positions whose
    next token is a label are gathered, and the output head + cross-entropy run on those
    in chunks, each recomputed in the backward pass instead of kept (head_losses). Packed
    or padded, prompts and padding never reach the vocabulary projection, and the fp32
    logits of a whole batch (4 x 1024 x 152k = 2.3 GiB for Qwen2.5) are never materialised.
    """
    labels = batch["labels"]
    rows, cols, targets = label_positions(labels)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # The call goes through the (DDP/peft) wrapper's forward, so gradient synchronisation sees it.
    outputs = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    hidden = outputs.hidden_states[-1][rows, cols]  # the final-norm output (transformers ties it to last_hidden_state)
    unwrapped = getattr(model, "module", model)
    softcap = getattr(unwrapped.config, "final_logit_softcapping", None)  # Gemma 2/3 cap their logits
    return head_losses(unwrapped.get_output_embeddings(), hidden, targets, softcap, chunk_logits), rows


def head_losses(head, hidden: torch.Tensor, targets: torch.Tensor, softcap: float | None = None,
                chunk_logits: int = LOSS_CHUNK_LOGITS) -> torch.Tensor:
    """cross_entropy(head(hidden), targets) per row, chunk by chunk; each chunk's logits are recomputed
    in the backward pass (activation checkpointing) rather than stored. Costs one extra head matmul on
    the label positions; saves all but one chunk of the [labels, vocabulary] fp32 logits."""
    from torch.utils.checkpoint import checkpoint

    rows_per_chunk = max(1, chunk_logits // head.weight.shape[0])
    pieces = []
    for h, t in zip(hidden.split(rows_per_chunk), targets.split(rows_per_chunk)):
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(chunk_losses, head, h, t, softcap, use_reentrant=False))
        else:
            pieces.append(chunk_losses(head, h, t, softcap))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def chunk_losses(head, hidden: torch.Tensor, targets: torch.Tensor, softcap: float | None) -> torch.Tensor:
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


class LabTrainer(Trainer):
    """transformers Trainer with the label-positions-only loss (hf backend)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses, _ = token_losses(model, inputs)
        denominator = num_items_in_batch if num_items_in_batch is not None else losses.numel()
        loss = losses.sum() / denominator
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts the labels on every rank, and DDP averages the ranks'
            # gradients: scale back up so the step is the mean over all ranks' tokens (as Trainer does)
            loss = loss * self.accelerator.num_processes
        return (loss, {}) if return_outputs else loss  # no logits kept: evaluation is loss-only


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


def last_checkpoint(output_dir) -> str | None:
    path = Path(output_dir)
    return get_last_checkpoint(str(path)) if path.is_dir() else None


# ---------------------------------------------------------------- one builder, one train loop, for every experiment

def training_arguments(p, run: Path, backend: Backend, args_class=None, **method_args):
    """The one place Params become TrainingArguments (or a TRL config: SFTConfig, GRPOConfig, DPOConfig).

    `p` has the shared groups (RunParams, LoraParams, OptimParams; EvalParams where the experiment
    evaluates during training). `method_args` are the method's own fields (GRPO's num_generations,
    DPO's beta, ...) and win over the shared ones.
    """
    from transformers import TrainingArguments

    if not 0 <= p.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio={p.warmup_ratio}: expected a share of the steps in [0, 1)")
    # transformers 5 reads the TensorBoard folder from the environment only
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard")
    precision = resolve_precision(p.precision, backend.device)
    shared = dict(
        output_dir=str(run / "checkpoints"), seed=p.seed, data_seed=p.seed,
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


def evaluation_arguments(p) -> dict:
    """Eval loss every eval_steps (else only before and after training), and the best checkpoint kept."""
    if p.load_best and p.eval_steps <= 0:
        raise ValueError("load_best=true needs eval_steps > 0: the best checkpoint is chosen by its eval loss")
    if p.load_best and p.save_steps % p.eval_steps:
        raise ValueError(f"load_best=true needs save_steps ({p.save_steps}) to be a multiple of "
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


def make_trainer(p, model, tokenizer, train_tokens, eval_tokens, run: Path, backend: Backend):
    """(trainer, LossHistory) for text SFT: the lab's batching and label-only loss, optional LoRA+."""
    padding_free = p.batching == "padding_free" and not backend.is_unsloth
    args = training_arguments(p, run, backend, prediction_loss_only=True,
                              train_sampling_strategy="group_by_length" if p.batching == "padded" else "random")
    trainer_cls = Trainer if backend.is_unsloth else LabTrainer  # unsloth brings its own fused loss
    history = LossHistory()
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train_tokens, eval_dataset=eval_tokens,
        data_collator=ChatCollator(tokenizer.pad_token_id, padding_free=padding_free), callbacks=[history],
        optimizers=lora_plus_optimizers(p, model), processing_class=tokenizer,
    )
    show_progress(trainer)  # one bar instead of a dict of strings printed per step
    return trainer, history


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


def train_from_last_checkpoint(trainer, run: Path) -> dict:
    """trainer.train(), resuming from the run's last checkpoint; the numbers every experiment records."""
    resume = last_checkpoint(run / "checkpoints")
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


def train_lora(p, model, tokenizer, train_tokens, eval_tokens, run: Path, backend: Backend,
               sample_conversations=None) -> dict:
    """Text SFT: eval loss before, training (resumed if possible), eval loss after.

    With eval_steps > 0 the held-out loss is also logged every eval_steps, and the first
    held-out conversations (`sample_conversations`) are answered at each of those points.
    """
    from lab_utils.chat import generate

    trainer, history = make_trainer(p, model, tokenizer, train_tokens, eval_tokens, run, backend)
    samples = sample_answers_during_training(
        trainer, p, lambda: generate(model, tokenizer, sample_conversations or [], max_new_tokens=p.max_new_tokens))
    eval_before = evaluate_before_training(trainer)
    outcome = train_from_last_checkpoint(trainer, run)
    return {**outcome, "eval_loss_before": eval_before, "eval_loss_after": trainer.evaluate()["eval_loss"],
            "history": history.records, "samples_during_training": samples}


def run_metrics(outcome: dict, model, report, backend: Backend) -> dict:
    """The flat numbers every training run records: the outcome's scalars, backend, rows, trainable size."""
    scalars = {k: v for k, v in outcome.items() if not isinstance(v, (list, dict))}
    return {**scalars, "backend": backend.name, "device": backend.device, "rows_kept": report.kept,
            "rows_skipped": len(report.skipped), **{f"trainable_{k}": v for k, v in trainable_parameters(model).items()}}


def save_training_artifacts(p, run: Path, model, processor, outcome: dict, report, backend: Backend) -> dict:
    """Adapter (+ tokenizer or processor), skip report, history, its plot, answers sampled during training;
    returns the run's metrics.

    Under DDP every rank holds the same weights after training: only the main one writes.
    """
    import matplotlib.pyplot as plt

    from lab_utils import plots
    from lab_utils.artifacts import write_json

    metrics = run_metrics(outcome, model, report, backend)
    if not is_main_process():
        return metrics
    model.save_pretrained(run / "adapter")
    processor.save_pretrained(run / "adapter")
    report.write_csv(run / "skipped_rows.csv")
    write_json(outcome["history"], run / "history.json")
    if outcome.get("samples_during_training"):
        write_json(outcome["samples_during_training"], run / "samples_during_training.json")
    # on disk now; a notebook has drawn its own copy and must not show this one too
    plt.close(plots.plot_training(outcome["history"], run / "training.png", title=f"{p.model} LoRA r={p.lora_r}"))
    return metrics


def finish_run(run: Path, experiment: str, metrics: dict, headline: tuple = ()) -> None:
    """metrics.json, then the completion marker (with the headline numbers) last; main rank only."""
    from lab_utils.artifacts import write_json
    from lab_utils.paths import mark_complete

    if not is_main_process():
        return
    write_json(metrics, run / "metrics.json")
    mark_complete(run, {"experiment": experiment, **{k: metrics.get(k) for k in headline}})


def open_run(experiment: str, p) -> Path:
    """The run folder for these Params (refusing to overwrite a finished run), with params.json.

    The backend is checked first: a run it refuses (unsloth without a GPU, hf after unsloth
    patched this kernel) stops before leaving a folder behind."""
    from lab_utils.config import save_params
    from lab_utils.paths import run_dir

    choose_backend(p.backend)
    # Under DDP the main rank creates (or overwrites) the folder before the others look at it,
    # so every rank sees the same checkpoints when it decides whether to resume.
    with main_process_first():
        run = run_dir(experiment, p.run_name, overwrite=p.overwrite and is_main_process())
        if is_main_process():
            save_params(p, run / "params.json")
    return run


def load_lora_model(p):
    """(LoRA model, tokenizer, backend): the backend is chosen (and announced) once."""
    from lab_utils.backend import get_backend

    backend = get_backend(p.backend)
    model, tokenizer = load_model(p, backend)
    print(f"[lab] {p.model}: {trainable_parameters(model)}")
    return model, tokenizer, backend
