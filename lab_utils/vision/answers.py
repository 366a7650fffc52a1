"""Ask a vision model about images (greedy, batched) and score its answers against the references."""

import re
import unicodedata

import torch


def question_messages(question: str, n_images: int = 1, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
    return messages + [{"role": "user", "content": content}]


@torch.no_grad()
def generate_answers(model, processor, images: list, questions: list[str], max_new_tokens: int = 16,
                     system: str | None = None) -> list[str]:
    """Greedy answers, one per (images, question); `images[i]` is a PIL image or a list of them.

    On the Unsloth path call `FastVisionModel.for_inference(model)` first.
    """
    per_row = [item if isinstance(item, (list, tuple)) else [item] for item in images]
    texts = [processor.apply_chat_template(question_messages(q, len(imgs), system), tokenize=False,
                                           add_generation_prompt=True) for q, imgs in zip(questions, per_row)]
    tokenizer = getattr(processor, "tokenizer", processor)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues from the right edge
    try:
        batch = processor(text=texts, images=per_row, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.train(was_training)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return [text.strip() for text in texts]


def normalise_answer(text) -> str:
    """Compare what a reader would: full-width digits as ASCII, case and spacing ignored."""
    text = unicodedata.normalize("NFKC", str(text or ""))
    return re.sub(r"\s+", " ", text).strip().casefold()


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def char_accuracy(prediction: str, reference: str) -> float:
    """1 - character error rate against the reference, floored at 0 (1.0 = every character right)."""
    prediction, reference = normalise_answer(prediction), normalise_answer(reference)
    if not reference:
        return float(not prediction)
    return max(0.0, 1.0 - edit_distance(prediction, reference) / len(reference))


def score_answers(predictions: list[str], references: list[str]) -> dict:
    """Exact match and mean character accuracy over paired answers."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return {"exact_match": 0.0, "char_accuracy": 0.0, "n": 0}
    exact = [normalise_answer(p) == normalise_answer(r) for p, r in zip(predictions, references)]
    chars = [char_accuracy(p, r) for p, r in zip(predictions, references)]
    return {"exact_match": sum(exact) / len(exact), "char_accuracy": sum(chars) / len(chars), "n": len(references)}
