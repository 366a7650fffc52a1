"""Assistant-only labels, and proof that batching never lets conversations see each other."""

import pytest
import torch
from datasets import Dataset

from data_loaders.common import SkipReport
from lab_utils.chat import IGNORE_INDEX, tokenize_conversation
from lab_utils.training import ChatCollator, EmptyBatchError, token_losses, tokenize_dataset

CONVERSATION = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "2+2 = 4."},
    {"role": "user", "content": "再说一次"},
    {"role": "assistant", "content": "四。"},
]


def labelled_text(tokenizer, encoded):
    return tokenizer.decode([t for t in encoded["labels"] if t != IGNORE_INDEX])


def test_only_assistant_turns_are_labelled(tokenizer):
    encoded = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert labelled_text(tokenizer, encoded) == "2+2 = 4.<|im_end|>\n四。<|im_end|>\n"
    unlabelled = tokenizer.decode([t for t, l in zip(encoded["input_ids"], encoded["labels"]) if l == IGNORE_INDEX])
    assert "What is 2+2?" in unlabelled and "再说一次" in unlabelled and "system" in unlabelled
    assert all(l in (IGNORE_INDEX, t) for t, l in zip(encoded["input_ids"], encoded["labels"]))


def test_truncated_answer_rows_are_dropped_and_reported(tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    dataset = Dataset.from_list([{"messages": CONVERSATION, "source": "a:1"}, {"messages": long_prompt, "source": "a:2"}])
    report = SkipReport(kept=2)
    tokens = tokenize_dataset(dataset, tokenizer, max_length=64, report=report)
    assert len(tokens) == 1 and report.kept == 1
    assert report.skipped[0]["source"] == "a:2" and report.skipped[0]["reason"] == "answer beyond max_seq_length"


def test_a_batch_with_every_label_masked_fails_clearly():
    rows = [{"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX] * 3}]
    with pytest.raises(EmptyBatchError, match="every label"):
        ChatCollator(pad_token_id=0)(rows)


def test_packed_batch_layout():
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    batch = ChatCollator(pad_token_id=0, padding_free=True)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # the second conversation's first token is never predicted from the first conversation
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    padded = ChatCollator(pad_token_id=0, padding_free=False)(rows)
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert padded["labels"].tolist() == [[-100, 6, 7], [8, 9, -100]]


@pytest.mark.parametrize("padding_free", [True, False])
def test_each_sample_loss_in_a_batch_equals_its_loss_alone(embedded_model, tokenizer, padding_free):
    conversations = [
        CONVERSATION,
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
        [{"role": "user", "content": "翻译：猫"}, {"role": "assistant", "content": "cat, a small furry animal"}],
    ]
    rows = [tokenize_conversation(tokenizer, c, 256) for c in conversations]
    collate = ChatCollator(tokenizer.pad_token_id, padding_free=padding_free)
    with torch.no_grad():
        alone = [token_losses(embedded_model, collate([r]))[0] for r in rows]
        together, _ = token_losses(embedded_model, collate(rows))
    assert together.shape[0] == sum(a.shape[0] for a in alone)
    assert torch.allclose(together, torch.cat(alone), atol=2e-4), (together - torch.cat(alone)).abs().max()
