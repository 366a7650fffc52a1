"""Is the completion's final answer right? Rewards that compare it with the gold answer.

Signature (TRL GRPO): `f(prompts, completions, answer, **kwargs) -> list[float | None]`.
`answer` is the dataset column of gold answers (TRL passes every dataset
column as a keyword list, one entry per completion). A dataset without that
column is a setup mistake, so it raises a clear error instead of scoring 0.

Scores, per completion:
    1.0   the extracted answer matches the gold answer
    0.0   it does not, or the completion holds no answer the extractor finds
    None  not applicable: this row's gold answer is missing or empty

    numeric_correctness_reward  numbers compared exactly or within a tolerance
                                ("$1,200.00" == "1200"); a gold answer that is not
                                a number falls back to exact_match's comparison
    exact_match_reward          strings equal after trimming, case and inner
                                whitespace folding, and dropping closing punctuation
    is_integer_reward           1.0 when the answer is a whole number (GSM8K's answers
                                all are): a cheap hint that shapes the answer's form;
                                no gold needed, so it never returns None

Reading a numeric answer (`answer_value`): models rarely write the bare number
the SYSTEM_PROMPT asks for, so what the extractor found is read the way people
write answers: "<answer>The answer is 42 apples.</answer>", "<answer>答案是 42</answer>",
"<answer>$\\boxed{42}$</answer>" and "6*12-19 = 53" all state one number and are
graded by it. A hedge that names several different numbers ("41 or 42") states
no single answer and scores 0.

Never raises on a completion: any string, any chat message list (None or
non-string content, empty lists, 100,000-digit runs) gets a score. Only a
setup mistake (no `answer` column, or answers that do not line up with the
completions) raises, before anything is scored.

Each looks for the answer in `<answer>` tags (the lab's SYSTEM_PROMPT format)
by default. `make_correctness_reward(extractors=..., ...)` builds a variant
that tries other places too (\\boxed{}, "#### n", "the answer is", the last number)
— useful to grade a model that was never taught the tags.
"""

import re

from fractions import Fraction

from rewards.extract import completion_text, extract_answer, extract_answer_is, extract_boxed
from rewards.numeric import numbers_in, parse_number, values_close

XML_ONLY = ("xml",)
ANY_FORMAT = ("xml", "boxed", "hash", "answer_is", "last_number")


def gold_answers(kwargs: dict, n: int, reward_name: str) -> list:
    """The `answer` column TRL passed, checked to line up with the completions."""
    if "answer" not in kwargs or kwargs["answer"] is None:
        raise ValueError(
            f"reward '{reward_name}' needs the gold answers: the dataset must have an 'answer' column "
            "(TRL passes it as answer=[...]); got keyword arguments: " + (", ".join(sorted(kwargs)) or "none")
        )
    gold = kwargs["answer"]
    if isinstance(gold, str):
        gold = [gold] * n  # one gold answer for every completion (handy when calling by hand)
    if len(gold) != n:
        raise ValueError(f"reward '{reward_name}': {len(gold)} gold answers for {n} completions")
    return list(gold)


def normalise_text(text: str) -> str:
    """Fold case and whitespace, drop closing punctuation: "  Paris. " -> "paris"."""
    return re.sub(r"\s+", " ", str(text)).strip().rstrip(".。!！").strip().casefold()


def single_value(text: str) -> Fraction | None:
    """The number a text names when it names exactly one value (repeats allowed), else None."""
    values = set(numbers_in(text))
    return values.pop() if len(values) == 1 else None


def _number_or_single(text: str) -> Fraction | None:
    value = parse_number(text)
    return value if value is not None else single_value(text)


def answer_value(text) -> Fraction | None:
    """The one number an extracted answer states, read leniently, or None.

    In order: the answer is a number as written ("$1,200", "53 muffins.");
    a \\boxed{} inside it holds the number; an "answer is" / "答案是" phrase
    names it; the part after the last "=" is one number ("6*12-19 = 53");
    else the text names exactly one value ("She has 42 apples left.").
    Several different numbers and no marker to choose between them is a hedge: None.
    """
    if text is None:
        return None
    text = str(text)
    value = parse_number(text)
    if value is not None:
        return value
    boxed = extract_boxed(text)
    if boxed is not None:
        return _number_or_single(boxed)
    stated = extract_answer_is(text)
    if stated is not None:
        return _number_or_single(stated)
    if "=" in text:
        value = parse_number(text.rsplit("=", 1)[1])
        if value is not None:
            return value
    return single_value(text)


def answers_match(predicted, gold, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Numbers compared as numbers when the gold is one, else as normalised text."""
    if predicted is None:
        return False
    gold_value = parse_number(gold)
    if gold_value is not None:
        return values_close(answer_value(predicted), gold_value, rel_tol=rel_tol, abs_tol=abs_tol)
    return normalise_text(predicted) == normalise_text(gold)


def _is_missing(gold) -> bool:
    return gold is None or not str(gold).strip()


class CorrectnessReward:
    """1.0 when the extracted answer matches the gold one; a picklable callable (see module doc).

    >>> reward = CorrectnessReward()
    >>> reward(None, ["<answer>42</answer>", "<answer>41</answer>", "42"], answer=["42", "42", "42"])
    [1.0, 0.0, 0.0]
    """

    def __init__(self, extractors=XML_ONLY, numeric: bool = True, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                 name: str = "correctness_reward"):
        self.extractors = tuple(extractors)
        self.numeric = numeric
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self.__name__ = name  # TRL logs rewards under their __name__

    def score(self, completion, gold) -> float | None:
        if _is_missing(gold):
            return None
        predicted = extract_answer(completion_text(completion), self.extractors)
        if predicted is None:
            return 0.0
        if self.numeric:
            return 1.0 if answers_match(predicted, gold, self.rel_tol, self.abs_tol) else 0.0
        return 1.0 if normalise_text(predicted) == normalise_text(gold) else 0.0

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        gold = gold_answers(kwargs, len(completions), self.__name__)
        return [self.score(c, g) for c, g in zip(completions, gold)]

    def __repr__(self) -> str:
        return (f"CorrectnessReward(extractors={self.extractors}, numeric={self.numeric}, "
                f"rel_tol={self.rel_tol}, abs_tol={self.abs_tol}, name={self.__name__!r})")


def make_correctness_reward(extractors=XML_ONLY, numeric: bool = True, rel_tol: float = 1e-6,
                            abs_tol: float = 1e-9, name: str | None = None) -> CorrectnessReward:
    """A correctness reward that finds the answer with `extractors` (names in rewards.extract.EXTRACTORS)
    and compares numerically (`numeric=True`, with the tolerances) or as normalised text."""
    if name is None:
        suffix = "" if tuple(extractors) == XML_ONLY else "_" + "_".join(extractors)
        name = f"correctness{suffix}_reward"
    return CorrectnessReward(extractors, numeric, rel_tol, abs_tol, name)


def numeric_correctness_reward(prompts, completions, **kwargs) -> list[float | None]:
    """1.0 when the <answer> equals the gold answer as a number (exact, or within 1e-6 relative).

    >>> numeric_correctness_reward(None, ["<answer>1,200</answer>", "<answer>12</answer>"], answer=["1200", "1200"])
    [1.0, 0.0]
    """
    gold = gold_answers(kwargs, len(completions), "numeric_correctness_reward")
    reward = CorrectnessReward(XML_ONLY, numeric=True)
    return [reward.score(c, g) for c, g in zip(completions, gold)]


def exact_match_reward(prompts, completions, **kwargs) -> list[float | None]:
    """1.0 when the <answer> equals the gold answer as text (case, spaces, closing punctuation folded).

    >>> exact_match_reward(None, ["<answer> Paris. </answer>", "<answer>Lyon</answer>"], answer=["paris", "paris"])
    [1.0, 0.0]
    """
    gold = gold_answers(kwargs, len(completions), "exact_match_reward")
    reward = CorrectnessReward(XML_ONLY, numeric=False)
    return [reward.score(c, g) for c, g in zip(completions, gold)]


def is_integer_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the <answer> states a whole number ("42", "1,200", "5.0"), else 0.0.

    >>> is_integer_reward(None, ["<answer>1,200</answer>", "<answer>5.0</answer>", "<answer>2.5</answer>", "42"])
    [1.0, 1.0, 0.0, 0.0]
    """
    values = [answer_value(extract_answer(completion_text(c), XML_ONLY)) for c in completions]
    return [1.0 if v is not None and v.denominator == 1 else 0.0 for v in values]
