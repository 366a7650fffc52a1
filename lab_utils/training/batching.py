"""Tokenised conversations and how they are batched (padding-free or padded).
"""

import math
from dataclasses import dataclass
import torch
from lab_utils.models.chat import IGNORE_INDEX, count_trainable_tokens, tokenize_conversation
from lab_utils.core.errors import LabError


class EmptyBatchError(LabError, ValueError):
    """A batch in which every label is masked: nothing to learn, and a NaN loss if trained on."""


def load_data_tokenizer(p):
    """The model's tokenizer without the model (cheap), loaded and set up as load_lora_model does it
    (trust_remote_code, the thinking switch): what build_dataset tokenizes with, before any run folder exists.
    The backend is checked first: a run it refuses (unsloth without CUDA, hf after unsloth) stops here,
    before minutes of tokenizing."""
    from lab_utils.core.backend import choose_backend
    from lab_utils.models.chat import set_thinking
    from lab_utils.models.registry import load_tokenizer, resolve_model

    choose_backend(getattr(p, "backend", "auto"))
    tokenizer = load_tokenizer(resolve_model(p.model), getattr(p, "trust_remote_code", False))
    return set_thinking(tokenizer, getattr(p, "enable_thinking", None))


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
            raise EmptyBatchError("every label in this batch is masked (no assistant tokens); "
                                  "check the data and max_seq_length")
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
