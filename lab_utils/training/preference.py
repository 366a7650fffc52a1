"""Held-out preference scores: does the model prefer the chosen answer to the rejected one, and by how much?

Every measure starts from the same numbers: the log-probability the model gives each answer
token after the prompt (rendered with the model's own chat template, as TRL's trainers do).

DPO (implicit reward). DPO trains the policy pi so that

    r(x, y) = beta * (log pi(y|x) - log ref(y|x))        (summed over the answer's tokens)

is larger for the chosen answer than for the rejected one. The reference is the policy as it
was when training started (a fresh LoRA = the base model; with `init_from`, the SFT adapter),
exactly what TRL's DPOTrainer compares against. Its log-probs are scored once, before training,
and reused afterwards. Before training every reward is 0 by definition, so every pair is a
tie: ties count as half right, and the accuracy starts at 0.5 (chance) with margin 0.

ORPO (log odds, no reference). ORPO trains on the length-normalised log-probability
m(y) = mean over the answer's tokens of log pi(token), through the odds p/(1-p) of p = exp(m):

    log_odds = (m(chosen) - m(rejected)) - (log(1 - exp(m(chosen))) - log(1 - exp(m(rejected))))

A pair is right when log_odds > 0 (equivalently m(chosen) > m(rejected)); the margin is the
mean log odds ratio. This one is meaningful before training too: the base model's own preference.

SimPO (no reference, length-normalised). SimPO (TRL's CPOTrainer, loss_type="simpo") trains the reward
beta * m(y) directly: the pair's margin is beta * (m(chosen) - m(rejected)), pushed above gamma (simpo_gamma).
A pair is right when the margin is > 0; the margin is its mean, the very quantity SimPO optimises.

KTO (unpaired rows). KTO sees one answer at a time, labelled desirable or not, and trains the same
implicit reward as DPO, r = beta * (log pi(y|x) - log ref(y|x)), up for desirable answers and down for
undesirable ones (against a batch-level KL reference point). Held-out rows are scored alone: a row's
margin is its reward signed by its label (+r if desirable, -r if not), right when > 0; the margin is
their mean. Like DPO it starts as a tie: accuracy 0.5, margin 0.

`likelihood_accuracy` (the share of pairs with m(chosen) > m(rejected)) is reported for every paired
method: a reference-free view of the same question (for SimPO it is its accuracy; KTO has no pairs).
"""

import math

import torch

from lab_utils.models.chat import ChatTemplateError, render
from lab_utils.core.errors import ParamError

TIE = 1e-6  # rewards closer than this are a tie (the policy and its reference agree)


def encode_pair_side(tokenizer, prompt: list[dict], answer: list[dict], max_length: int) -> tuple[list[int], int]:
    """(token ids of prompt + answer, number of prompt tokens), truncated to max_length (the start is kept)."""
    prompt_text = render(tokenizer, prompt, add_generation_prompt=True)
    full_text = render(tokenizer, prompt + answer)
    if not full_text.startswith(prompt_text):
        raise ChatTemplateError("the chat template does not render prompt + answer as an extension of the prompt")
    # the answer's ids are the full text's ids after the prompt's, as TRL's trainers tokenize them
    n_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    return full_ids[:max_length], min(n_prompt, max_length)


@torch.no_grad()
def answer_logps(model, tokenizer, prompts, answers, max_length: int = 512, batch_size: int = 8):
    """(summed log-prob of each answer's tokens, number of answer tokens), one float/int per row."""
    was_training = model.training
    model.eval()
    sums, counts = [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        for start in range(0, len(prompts), batch_size):
            encoded = [encode_pair_side(tokenizer, p, a, max_length)
                       for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size])]
            longest = max(len(ids) for ids, _ in encoded)
            input_ids = torch.tensor([ids + [pad] * (longest - len(ids)) for ids, _ in encoded], device=model.device)
            attention = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids, _ in encoded],
                                     device=model.device)
            # position t predicts token t+1: an answer token is one at or after the prompt's end, before padding
            answer_mask = torch.zeros_like(input_ids, dtype=torch.bool)
            for row, (ids, n_prompt) in enumerate(encoded):
                answer_mask[row, n_prompt:len(ids)] = True
            logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
            mask = answer_mask[:, 1:]
            sums += (token_logps * mask).sum(-1).tolist()
            counts += mask.sum(-1).tolist()
    finally:
        model.train(was_training)
    return sums, counts


def score_pairs(model, tokenizer, pairs, max_length: int = 512, batch_size: int = 8) -> dict:
    """Per pair: summed log-probs and token counts of the chosen and the rejected answer."""
    chosen, chosen_tokens = answer_logps(model, tokenizer, pairs["prompt"], pairs["chosen"], max_length, batch_size)
    rejected, rejected_tokens = answer_logps(
        model, tokenizer, pairs["prompt"], pairs["rejected"], max_length, batch_size
    )
    return {
        "chosen_logp": chosen,
        "rejected_logp": rejected,
        "chosen_tokens": chosen_tokens,
        "rejected_tokens": rejected_tokens,
    }


def score_unpaired(model, tokenizer, rows, max_length: int = 512, batch_size: int = 8) -> dict:
    """Per unpaired row (KTO): summed log-prob and token count of its completion, and its label."""
    logp, tokens = answer_logps(model, tokenizer, rows["prompt"], rows["completion"], max_length, batch_size)
    return {"logp": logp, "tokens": tokens, "label": list(rows["label"])}


def log1mexp(x: float) -> float:
    """log(1 - exp(x)) for x < 0, stable near 0 (as ORPO's loss computes it)."""
    return math.log(-math.expm1(x)) if x < -1e-12 else -math.inf


def mean_logp(logp: float, tokens: int) -> float:
    return logp / max(tokens, 1)


def pair_margins(scores: dict, reference: dict | None, method: str, beta: float) -> list[float]:
    """Per pair: chosen minus rejected, in the method's own measure (see the module docstring)."""
    rows = range(len(scores["chosen_logp"]))
    if method == "dpo":
        if reference is None:
            raise ValueError("DPO's implicit reward needs the reference's scores (the model before training)")
        return [
            beta
            * (
                (scores["chosen_logp"][i] - reference["chosen_logp"][i])
                - (scores["rejected_logp"][i] - reference["rejected_logp"][i])
            )
            for i in rows
        ]
    if method == "orpo":
        margins = []
        for i in rows:
            chosen = mean_logp(scores["chosen_logp"][i], scores["chosen_tokens"][i])
            rejected = mean_logp(scores["rejected_logp"][i], scores["rejected_tokens"][i])
            margins.append((chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected)))
        return margins
    if method == "simpo":
        return [
            beta
            * (
                mean_logp(scores["chosen_logp"][i], scores["chosen_tokens"][i])
                - mean_logp(scores["rejected_logp"][i], scores["rejected_tokens"][i])
            )
            for i in rows
        ]
    raise ParamError(f"method={method!r}: expected dpo, orpo or simpo (kto: row_margins)")


def row_margins(scores: dict, reference: dict, beta: float) -> list[float]:
    """KTO, per unpaired row: its implicit reward beta * (log pi - log ref), signed by its label."""
    return [
        beta * (logp - ref) * (1 if label else -1)
        for logp, ref, label in zip(scores["logp"], reference["logp"], scores["label"])
    ]


def share_right(margins: list[float]) -> float:
    """Share of pairs with a positive margin; a tie (|margin| <= TIE) counts as half."""
    return sum(1.0 if m > TIE else 0.5 if abs(m) <= TIE else 0.0 for m in margins) / len(margins)


def preference_summary(scores: dict, reference: dict | None, method: str, beta: float) -> dict:
    """accuracy and margin in the method's measure, plus the reference-free likelihood accuracy (pairs only)."""
    if method == "kto":
        margins = row_margins(scores, reference, beta)
        return {
            "accuracy": round(share_right(margins), 4),
            "margin": round(sum(margins) / len(margins), 4),
            "likelihood_accuracy": None,
            "margins": margins,
        }
    margins = pair_margins(scores, reference, method, beta)
    normalised = [
        mean_logp(c, nc) - mean_logp(r, nr)
        for c, r, nc, nr in zip(
            scores["chosen_logp"], scores["rejected_logp"], scores["chosen_tokens"], scores["rejected_tokens"]
        )
    ]
    return {
        "accuracy": round(share_right(margins), 4),
        "margin": round(sum(margins) / len(margins), 4),
        "likelihood_accuracy": round(share_right(normalised), 4),
        "margins": margins,
    }
