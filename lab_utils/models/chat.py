"""Chat formatting in one place: render conversations with the model's own template,
tokenize them with loss on the assistant's tokens only, and generate answers.

Assistant-only labels are found by character offsets, not by re-tokenising
prefixes: render the conversation once, note where each assistant turn's text
(its content plus the end-of-turn marker the template writes) starts and ends,
and label exactly the tokens inside those spans. This works for any chat
template that renders a conversation as the concatenation of its prefixes
(ChatML/Qwen/SmolLM2, Llama-3, Mistral...), which `assistant_spans` checks.

The thinking switch: Qwen3's template takes `enable_thinking` (False writes an empty
<think></think> block after the assistant prompt, so the model answers directly). `set_thinking`
fixes it for every render, tokenization and generation with a tokenizer (the experiments' Params
`enable_thinking`; None = the template's default); a template without the switch is refused with
one line (`check_thinking_switch`), since passing it there would silently change nothing.
"""

import torch

from lab_utils.core.progress import progress_bar
from lab_utils.core.errors import LabError

IGNORE_INDEX = -100
THINKING_ATTRIBUTE = "lab_enable_thinking"  # set on a tokenizer by set_thinking
REPLACEMENT_CHARACTER = "\ufffd"  # what a decoder writes for bytes that are not a whole UTF-8 character


class ChatTemplateError(LabError, ValueError):
    """A chat template the lab cannot use: none at all, one that does not render conversations prefix by
    prefix (no prompt masking), or (export) none of the Ollama templates renders like it."""


def trl_chat_template(file: str) -> str:
    """A model maker's original chat template as the pinned TRL ships it (trl/chat_templates/<file>, e.g.
    qwen3.jinja, qwen3_vl.jinja; byte-identical to tests/data/templates/, whose README cites the sources)."""
    from importlib.resources import files

    path = files("trl") / "chat_templates" / file
    if not path.is_file():
        raise FileNotFoundError(f"trl has no chat_templates/{file}; install the pinned trl (requirements.txt)")
    return path.read_text(encoding="utf-8")


def has_thinking_switch(tokenizer) -> bool:
    """Whether the chat template reads `enable_thinking` (detected from its text, as Qwen3's does)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "enable_thinking" in template


def check_thinking_switch(tokenizer, enable_thinking: bool | None, model: str = "") -> None:
    """ChatTemplateError (one line) when enable_thinking is set for a template that has no such switch."""
    if enable_thinking is not None and not has_thinking_switch(tokenizer):
        raise ChatTemplateError(f"enable_thinking={enable_thinking}: the chat template of "
                                f"{model or tokenizer.name_or_path!r} has no thinking switch (it never reads "
                                "enable_thinking); leave enable_thinking unset (null) for this model, or use Qwen3")


def check_model_thinking(model: str, enable_thinking: bool | None) -> None:
    """check_thinking_switch for a model name, before anything heavy is loaded (only its tokenizer)."""
    if enable_thinking is None:
        return
    from lab_utils.models.registry import load_tokenizer, resolve_model

    check_thinking_switch(load_tokenizer(resolve_model(model)), enable_thinking, model)


def set_thinking(tokenizer, enable_thinking: bool | None):
    """Use this switch in every render/tokenize/generate with `tokenizer` (None: the template's default)."""
    check_thinking_switch(tokenizer, enable_thinking)
    setattr(tokenizer, THINKING_ATTRIBUTE, enable_thinking)
    return tokenizer


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False,
           enable_thinking: bool | None = None) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"tokenizer {tokenizer.name_or_path!r} has no chat_template; "
                                "use an instruct/chat model")
    if enable_thinking is None:
        enable_thinking = getattr(tokenizer, THINKING_ATTRIBUTE, None)
    check_thinking_switch(tokenizer, enable_thinking)
    switch = {} if enable_thinking is None else {"enable_thinking": enable_thinking}  # a template kwarg
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **switch)


def prompt_of(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its final assistant answer."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the [start, end) character spans of every assistant turn."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through)):
            raise ChatTemplateError("chat template does not render conversations prefix by prefix; cannot mask prompts")
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> dict:
    """input_ids and labels (-100 outside assistant turns), truncated to max_length."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                        max_length=max_length)
    labels = []
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        inside = any(s <= start and end <= e and end > start for s, e in spans)
        labels.append(token_id if inside else IGNORE_INDEX)
    return {"input_ids": encoded["input_ids"], "labels": labels}


def count_trainable_tokens(labels) -> int:
    return sum(1 for t in labels if t != IGNORE_INDEX)


def decode_whole_characters(tokenizer, token_ids) -> str:
    """Decode new tokens, dropping a character cut in half at the end.

    An answer stopped by max_new_tokens can end inside a multi-byte UTF-8 character (one
    Chinese character is often two byte-level BPE tokens); its first bytes alone decode to
    U+FFFD (`翻译: �`). Only whole characters are kept.
    """
    return tokenizer.decode(token_ids, skip_special_tokens=True).rstrip(REPLACEMENT_CHARACTER)


def whole_characters_stream(pieces):
    """A streamed answer (transformers' TextIteratorStreamer), dropping a character cut in half at its very end, as
    decode_whole_characters does; mid-stream the streamer already holds an unfinished character back. The last
    piece is held until the stream ends."""
    previous = None
    for piece in pieces:
        if previous is not None:
            yield previous
        previous = piece
    if previous:
        yield previous.rstrip(REPLACEMENT_CHARACTER)


class TokenTicker:
    """A generate() stopping criterion that never stops: it advances a progress bar once per new token."""

    def __init__(self, bar):
        self.bar = bar

    def __call__(self, input_ids, scores, **kwargs):
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 8,
             temperature: float = 0.0) -> list[str]:
    """Answers for each conversation's prompt, greedy by default (fixed decoding = comparable runs).

    One progress bar counts decoding steps over all batches (a batch that stops early at
    end-of-turn moves the bar to its full share).
    """
    from transformers import StoppingCriteriaList

    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
    answers = []
    n_batches = -(-len(conversations) // batch_size)
    try:
        with progress_bar(total=n_batches * max_new_tokens, desc="generate", unit="tok") as bar:
            for i in range(0, len(conversations), batch_size):
                prompts = [render(tokenizer, prompt_of(c), add_generation_prompt=True)
                           for c in conversations[i : i + batch_size]]
                batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
                out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id,
                                     stopping_criteria=StoppingCriteriaList([TokenTicker(bar)]), **sampling)
                new_tokens = out[:, batch["input_ids"].shape[1] :]
                answers += [decode_whole_characters(tokenizer, row).strip() for row in new_tokens]
                bar.update((i // batch_size + 1) * max_new_tokens - bar.n)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers
