"""Vision chat rows -> training batches whose labels are the assistant answers only, and TRL's settings for them.

Rows are the `data_loaders.excel_vision` schema: `messages` in the content-list form
({"type": "image"} placeholders) and an `images` column of PIL images. The collator, not
TRL, turns them into tensors: `vision_sft_config` tells TRL to leave the rows alone.
"""

import torch

from lab_utils.core.backend import get_backend, import_unsloth
from lab_utils.models.chat import IGNORE_INDEX
from lab_utils.vision.processor import ASSISTANT_MARKER, USER_MARKER, VISION_SPECIAL_TOKENS
from lab_utils.core.errors import DataError


def assistant_token_mask(input_ids: list[int], start_ids: list[int], end_id: int) -> list[bool]:
    """True on every assistant answer token and its closing <|im_end|> (so the model learns to stop)."""
    mask, i, n, k = [False] * len(input_ids), 0, len(input_ids), len(start_ids)
    while i < n:
        if input_ids[i:i + k] == start_ids:
            j = i + k
            while j < n and input_ids[j] != end_id:
                mask[j] = True
                j += 1
            if j < n:
                mask[j] = True
            i = j + 1
        else:
            i += 1
    return mask


def example_images(example) -> list:
    """An example's images: the `images` column, else images inline in the message contents."""
    if example.get("images"):
        return list(example["images"])
    return [part["image"] for message in example["messages"] if not isinstance(message["content"], str)
            for part in message["content"] if part.get("image") is not None]


class VisionSFTCollator:
    """Rows {messages, images} -> a training batch whose labels are the assistant answers only.

    Everything else is -100: system and user turns, the image placeholder tokens and
    <|vision_start|>/<|vision_end|>, padding. A batch in which every label is masked (an
    answer truncated away, a conversation without an assistant turn) is an error, not a
    silent zero-gradient step.
    """

    def __init__(self, processor, max_length: int | None = None, dtype: torch.dtype | None = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length
        self.dtype = dtype  # pixel_values dtype (bf16 models on GPU); None keeps float32
        self.start_ids = self.tokenizer.encode(ASSISTANT_MARKER, add_special_tokens=False)
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.never_label = torch.tensor([self.tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS])

    def __call__(self, examples: list[dict]) -> dict:
        texts = [self.processor.apply_chat_template(e["messages"], tokenize=False) for e in examples]
        images = [example_images(e) for e in examples]
        batch = self.processor(text=texts, images=images if any(images) else None, padding=True,
                               return_tensors="pt", padding_side="right")
        self.check_length(batch, examples)
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, ids in enumerate(batch["input_ids"].tolist()):
            keep = torch.tensor(assistant_token_mask(ids, self.start_ids, self.end_id))
            labels[row, keep] = batch["input_ids"][row, keep]
        labels[torch.isin(batch["input_ids"], self.never_label) | (batch["attention_mask"] == 0)] = IGNORE_INDEX
        if (labels == IGNORE_INDEX).all():
            sources = [e.get("source", "?") for e in examples]
            raise DataError(f"every label in this batch is masked (rows {sources}): no assistant answer tokens; "
                             f"check the rows end with an assistant turn and the chat template writes "
                             f"'{ASSISTANT_MARKER.strip()}'")
        batch["labels"] = labels
        if self.dtype is not None and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return dict(batch)

    def check_length(self, batch, examples):
        # Truncating would cut image tokens away from their pixel_values (a shape error deep in
        # the model) or the answer (nothing to learn), so an over-long row is a clear error.
        if self.max_length is None or batch["input_ids"].shape[1] <= self.max_length:
            return
        lengths = batch["attention_mask"].sum(-1).tolist()
        too_long = [(e.get("source", "?"), n) for e, n in zip(examples, lengths) if n > self.max_length]
        raise DataError(f"rows longer than max_length={self.max_length} tokens: {too_long}; "
                         "lower the loader's max_image_side or raise max_length")


def unsloth_vision_collator(model, processor, max_seq_length: int | None = None):
    """Unsloth's collator, trained on the assistant answers only (GPU path)."""
    import_unsloth()
    from unsloth.trainer import UnslothVisionDataCollator

    return UnslothVisionDataCollator(model, processor, max_seq_length=max_seq_length, train_on_responses_only=True,
                                     instruction_part=USER_MARKER, response_part=ASSISTANT_MARKER)


def make_vision_collator(model, processor, backend=None, max_length: int | None = None):
    backend = backend or get_backend()
    if backend.is_unsloth:
        return unsloth_vision_collator(model, processor, max_length)
    dtype = next(model.parameters()).dtype
    return VisionSFTCollator(processor, max_length=max_length, dtype=None if dtype == torch.float32 else dtype)


def vision_sft_config() -> dict:
    """The SFTConfig fields vision rows need (lab_utils.training.trainer.training_arguments adds the shared ones):
    the collator, not TRL, turns rows into tensors."""
    return dict(
        remove_unused_columns=False,  # the collator needs `images`, which the model's forward does not name
        dataset_text_field="",
        dataset_kwargs={"skip_prepare_dataset": True},  # no text-only tokenisation pass over image rows
    )
