"""The label-positions-only loss: the vocabulary projection runs only where a label is.
"""

import torch
from transformers import Trainer
from lab_utils.models.chat import IGNORE_INDEX


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
