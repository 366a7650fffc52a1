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

Each looks for the answer in `<answer>` tags (the lab's SYSTEM_PROMPT format)
by default. `make_correctness_reward(extractors=..., ...)` builds a variant
that tries other places too (\\boxed{}, "#### n", "the answer is", the last number)
— useful to grade a model that was never taught the tags.
"""

import re

from rewards.extract import completion_text, extract_answer
from rewards.numeric import is_integer_text, numbers_equal, parse_number

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


def answers_match(predicted, gold, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Numbers compared as numbers when the gold is one, else as normalised text."""
    if predicted is None:
        return False
    if parse_number(gold) is not None:
        return numbers_equal(predicted, gold, rel_tol=rel_tol, abs_tol=abs_tol)
    return normalise_text(predicted) == normalise_text(gold)


def _is_missing(gold) -> bool:
    return gold is None or not str(gold).strip()


class CorrectnessReward:
    """1.0 when the extracted answer matches the gold one; a picklable callable (see module doc)."""

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
    """1.0 when the <answer> equals the gold answer as a number (exact, or within 1e-6 relative)."""
    gold = gold_answers(kwargs, len(completions), "numeric_correctness_reward")
    reward = CorrectnessReward(XML_ONLY, numeric=True)
    return [reward.score(c, g) for c, g in zip(completions, gold)]


def exact_match_reward(prompts, completions, **kwargs) -> list[float | None]:
    """1.0 when the <answer> equals the gold answer as text (case, spaces, closing punctuation folded)."""
    gold = gold_answers(kwargs, len(completions), "exact_match_reward")
    reward = CorrectnessReward(XML_ONLY, numeric=False)
    return [reward.score(c, g) for c, g in zip(completions, gold)]


def is_integer_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the <answer> states a whole number ("42", "1,200", "5.0"), else 0.0."""
    answers = [extract_answer(completion_text(c), XML_ONLY) for c in completions]
    return [1.0 if a is not None and is_integer_text(a) else 0.0 for a in answers]
