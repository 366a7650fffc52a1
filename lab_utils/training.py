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

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from lab_utils.backend import Backend, import_unsloth
from lab_utils.chat import IGNORE_INDEX, count_trainable_tokens, tokenize_conversation
from lab_utils.distributed import launched_distributed, local_rank
from lab_utils.models import load_tokenizer, lora_target_modules, resolve_model


class EmptyBatchError(ValueError):
    """A batch in which every label is masked: nothing to learn, and a NaN loss if trained on."""


# ---------------------------------------------------------------- model + LoRA

def torch_dtype(precision: str, device: str):
    if precision == "auto":
        precision = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else ("fp16" if device == "cuda" else "fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


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
                              bnb_4bit_compute_dtype=torch_dtype("auto", device))


def lora_kwargs(p) -> dict:
    return dict(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout, use_rslora=p.use_rslora)


def load_model(p, backend: Backend):
    """(model with LoRA attached, tokenizer) for Params with the shared LoRA/precision fields."""
    source = resolve_model(p.model)
    if backend.is_unsloth:
        return load_unsloth_model(p, source)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(source)
    quant = quantization_config(p.load_in_4bit, p.load_in_8bit, backend.device)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch_dtype(p.precision, backend.device), quantization_config=quant,
        # one whole copy per process: under DDP each rank's copy on its own GPU
        device_map={"": local_rank()} if backend.device == "cuda" else None, attn_implementation="sdpa",
    )
    model.config.use_cache = False  # a KV cache in training disables the packed-sequence mask
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=p.gradient_checkpointing)
    elif p.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(task_type="CAUSAL_LM", target_modules=lora_target_modules(model, p.lora_mlp),
                        use_dora=p.use_dora, **lora_kwargs(p))
    return get_peft_model(model, config), tokenizer


def load_unsloth_model(p, source: str):
    import_unsloth()
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=p.max_seq_length, dtype=None,
        load_in_4bit=p.load_in_4bit, load_in_8bit=p.load_in_8bit,
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


def token_losses(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label-token cross-entropy, computing logits only where a label follows.

    Returns (losses, row_index_of_each_loss). With a single packed row the kept
    positions are passed as `logits_to_keep`, so the vocabulary projection runs
    only on assistant tokens.
    """
    labels = batch["labels"]
    rows, cols, targets = label_positions(labels)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if labels.shape[0] == 1:
        logits = model(**inputs, use_cache=False, logits_to_keep=cols).logits[0]
    else:
        logits = model(**inputs, use_cache=False).logits[rows, cols]
    losses = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return losses, rows


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
