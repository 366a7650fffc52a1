"""Does the completion follow the reasoning-then-answer format? Rewards for its shape only.

The format (the one the Unsloth GRPO notebooks use, and SYSTEM_PROMPT asks for):

    <reasoning>
    step-by-step working
    </reasoning>
    <answer>
    42
    </answer>

Signature (TRL GRPO): `f(prompts, completions, **kwargs) -> list[float]`; the
prompt is not looked at. None is never returned: every completion has a shape.
Scores, each in [0, 1]:

    strict_format_reward  1.0 for exactly the layout above: the text starts with <reasoning>,
                          each tag on its own line, each tag exactly once, both bodies
                          non-empty, nothing after </answer> but whitespace; else 0.0
    soft_format_reward    1.0 when a <reasoning>...</reasoning> block comes first and an
                          <answer>...</answer> block follows it, any spacing, text after allowed
    xml_count_reward      partial credit while the model learns the tags: 0.25 for each of
                          the four tags that appears exactly once, minus 0.001 per character
                          of text after the last </answer> (at most 0.25), never below 0

The shaping rewards give a small model a gradient toward the format long
before its answers are right; correctness rewards then do the real work.
"""

import re

from rewards.extract import completion_text

SYSTEM_PROMPT = """Respond in the following format:
<reasoning>
Think step by step and show your working.
</reasoning>
<answer>
Only the final answer, a number without units.
</answer>"""
"""The system prompt for the reasoning/answer format: the GRPO data loaders put it
first in every prompt, and the format rewards above grade against it."""

SYSTEM_PROMPT_ZH = """请按以下格式回答：
<reasoning>
用中文一步一步地思考，写出计算过程。
</reasoning>
<answer>
只写最终答案，一个不带单位的数字。
</answer>"""
"""The same instruction in Chinese, for Chinese users and questions (pairs with
language_consistency_reward: a Chinese prompt should get Chinese reasoning)."""

TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")

_STRICT = re.compile(r"<reasoning>\n(.+?)\n</reasoning>\n<answer>\n(.+?)\n</answer>\s*", re.DOTALL)
_SOFT_START = re.compile(r"\s*<reasoning>")
_SOFT_JOINT = re.compile(r"</reasoning>\s*<answer>")


def tag_counts(text: str) -> dict:
    """How often each of the four format tags occurs in the text."""
    return {tag: text.count(tag) for tag in TAGS}


def is_strict_format(text: str) -> bool:
    """Exactly the layout in the module docstring (see strict_format_reward)."""
    if any(n != 1 for n in tag_counts(text).values()):
        return False  # checked first: with each tag once, the regex cannot backtrack far
    match = _STRICT.fullmatch(text)
    if not match:
        return False
    return bool(match.group(1).strip()) and bool(match.group(2).strip())


def is_soft_format(text: str) -> bool:
    r"""A reasoning block first, an answer block after it (see soft_format_reward).

    Same as matching r"\s*<reasoning>.*?</reasoning>\s*<answer>.*?</answer>" from the start,
    in linear time: if any "</reasoning> <answer>" joint has a "</answer>" after it, the
    first joint does too (that regex backtracks quadratically on thousands of open blocks).
    """
    start = _SOFT_START.match(text)
    if start is None:
        return False
    joint = _SOFT_JOINT.search(text, start.end())
    return joint is not None and "</answer>" in text[joint.end():]


def xml_count_score(text: str) -> float:
    """Partial credit per tag, minus a small charge for text after the answer."""
    score = sum(0.25 for n in tag_counts(text).values() if n == 1)
    if "</answer>" in text:
        trailing = text.rsplit("</answer>", 1)[1].strip()
        score -= min(0.25, 0.001 * len(trailing))  # rambling past the answer is what we discourage
    return max(0.0, round(score, 6))


def strict_format_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the completion is exactly <reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>.

    >>> strict_format_reward(None, ["<reasoning>\\n6 * 7\\n</reasoning>\\n<answer>\\n42\\n</answer>\\n",
    ...                             "<reasoning>6 * 7</reasoning> <answer>42</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if is_strict_format(completion_text(c)) else 0.0 for c in completions]


def soft_format_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when a <reasoning> block comes first and an <answer> block follows, spacing free.

    >>> soft_format_reward(None, ["<reasoning>6 * 7</reasoning> <answer>42</answer>", "<answer>42</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if is_soft_format(completion_text(c)) else 0.0 for c in completions]


def xml_count_reward(prompts, completions, **kwargs) -> list[float]:
    """0.25 per format tag present exactly once, minus 0.001 per trailing character; in [0, 1].

    >>> xml_count_reward(None, ["<reasoning>\\n6 * 7\\n</reasoning>\\n<answer>\\n42\\n</answer>\\n",
    ...                         "<answer>\\n42\\n</answer>\\nok", "42"])
    [1.0, 0.498, 0.0]
    """
    return [xml_count_score(completion_text(c)) for c in completions]
