"""Assistant-only labels, and proof that batching never lets conversations see each other."""

import pytest
import torch
from datasets import Dataset

from data_loaders.common import SkipReport
from lab_utils.models.chat import IGNORE_INDEX, tokenize_conversation
from lab_utils.training.batching import ChatCollator, EmptyBatchError, tokenize_dataset
from lab_utils.training.loss import token_losses

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
    unlabelled = tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"])
                                   if label == IGNORE_INDEX])
    assert "What is 2+2?" in unlabelled and "再说一次" in unlabelled and "system" in unlabelled
    assert all(label in (IGNORE_INDEX, t) for t, label in zip(encoded["input_ids"], encoded["labels"]))


def test_truncated_answer_rows_are_dropped_and_reported(tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    dataset = Dataset.from_list([{"messages": CONVERSATION, "source": "a:1"},
                                 {"messages": long_prompt, "source": "a:2"}])
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


def tiny_lora_model(vocab: int = 1000):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=True, use_cache=False)
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM",
                      init_lora_weights=False)  # B != 0: gradients reach A as well
    return get_peft_model(model, lora)


def reference_losses(model, batch):
    """The textbook way: full-vocabulary logits for every position, then cross-entropy at the label positions."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    shifted = batch["labels"][:, 1:]
    keep = shifted != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), shifted[keep], reduction="none")


@pytest.mark.parametrize("padding_free", [False, True])
def test_chunked_label_only_loss_equals_full_logits_loss_in_value_and_gradient(padding_free):
    model = tiny_lora_model()
    generator = torch.Generator().manual_seed(1)
    rows = []
    for length in (23, 9, 31):  # unequal lengths: the padded batch has padding
        ids = torch.randint(0, 1000, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (length // 2) + ids[length // 2:]})
    batch = ChatCollator(pad_token_id=0, padding_free=padding_free)(rows)
    head_inputs = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: head_inputs.append(tuple(i[0].shape)))
    # 5 label rows per chunk (5 x 1000 logits): several chunks, the last one partial
    losses, _ = token_losses(model, batch, chunk_logits=5 * 1000)
    n_labels = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    n_chunks = (n_labels + 4) // 5
    assert losses.shape == (n_labels,)
    # inside the model the head saw one position per row (logits_to_keep=1), never the sequence;
    # then label positions only, at most 5 at a time
    inside, chunks = head_inputs[0], head_inputs[1:]
    assert inside == (batch["input_ids"].shape[0], 1, 64)
    assert len(chunks) == n_chunks and max(c[0] for c in chunks) <= 5 and sum(c[0] for c in chunks) == n_labels
    grads = torch.autograd.grad(losses.mean(), [w for w in model.parameters() if w.requires_grad])
    handle.remove()
    assert len(head_inputs) == 1 + 2 * n_chunks, "each chunk's logits were recomputed in the backward, not stored"
    expected = reference_losses(model, batch)
    expected_grads = torch.autograd.grad(expected.mean(), [w for w in model.parameters() if w.requires_grad])
    assert torch.allclose(losses, expected, atol=1e-5)
    assert all(torch.allclose(g, e, atol=1e-6, rtol=1e-4) for g, e in zip(grads, expected_grads))
