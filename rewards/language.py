"""Does the completion answer in the prompt's language? For Chinese users, mostly.

Small models trained with GRPO on mixed data drift into English reasoning
under a Chinese question (or mix both mid-sentence). This reward pays for
staying in the user's language.

The measure is deliberately simple and dependency-free: the *Chinese share*
of a text is  CJK characters / (CJK characters + Latin-script words),  with
XML tags, numbers and punctuation ignored. (One Chinese character carries
roughly as much as one English word, hence characters vs words.) A text is
"zh" when that share is at least 0.5, "en" (any Latin-script language) below,
and None when it holds neither kind of letter (e.g. only "42").

language_consistency_reward(prompts, completions, **kwargs) -> list[float | None]
    The prompt's language comes from its last user message (the system prompt is
    the lab's, not the user's). The graded text is the <reasoning> body when there
    is one, else the whole completion. Score in [0, 1]:
        Chinese prompt      the completion's Chinese share
        Latin-script prompt 1 - the completion's Chinese share
        a completion with no letters at all scores 0.0 (it said nothing in any language)
        None                the prompt itself has no letters, so no language to match
"""

import re

from rewards.extract import REASONING_TAG, completion_text, prompt_text

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_TAG = re.compile(r"</?[A-Za-z_]+>")
ZH_THRESHOLD = 0.5


def chinese_share(text: str) -> float | None:
    """CJK characters / (CJK characters + Latin words), or None when there are neither."""
    text = _TAG.sub(" ", text or "")
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    if cjk + latin == 0:
        return None
    return cjk / (cjk + latin)


def detect_language(text: str) -> str | None:
    """'zh', 'en' (any Latin script), or None for a text without letters."""
    share = chinese_share(text)
    if share is None:
        return None
    return "zh" if share >= ZH_THRESHOLD else "en"


def reasoning_text(completion: str) -> str:
    """The <reasoning> body (closed or cut off by the length limit), else the whole completion."""
    start = completion.find(f"<{REASONING_TAG}>")
    if start < 0:
        return completion
    body = completion[start + len(REASONING_TAG) + 2:]
    end = body.find(f"</{REASONING_TAG}>")
    return body if end < 0 else body[:end]


def language_consistency_score(prompt: str, completion: str) -> float | None:
    language = detect_language(prompt)
    if language is None:
        return None
    share = chinese_share(reasoning_text(completion))
    if share is None:
        return 0.0
    return round(share if language == "zh" else 1.0 - share, 6)


def language_consistency_reward(prompts, completions, **kwargs) -> list[float | None]:
    """Share of the reasoning written in the prompt's language (Chinese vs Latin script), in [0, 1].

    >>> prompts = ["小明有几个苹果？", "小明有几个苹果？"]
    >>> language_consistency_reward(prompts, ["<reasoning>他有三个</reasoning>", "<reasoning>three</reasoning>"])
    [1.0, 0.0]
    """
    if prompts is None:  # called by hand without prompts: no language to match
        prompts = [None] * len(completions)
    pairs = zip(prompts, completions, strict=True)
    return [language_consistency_score(prompt_text(p), completion_text(c)) for p, c in pairs]
