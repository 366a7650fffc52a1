"""Penalties for degenerate completions: too long, or repeating itself.

Both are factories returning picklable callables (small classes with a
`__name__`, which TRL logs) with the GRPO signature
`f(prompts, completions, **kwargs) -> list[float]`. Scores are in
[-1, 0] (or [max_penalty, 0]): 0 for a healthy completion, more negative
the worse it gets. They never return None.

    make_overlong_penalty(max_length, soft_cache=None, unit="tokens")
        DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13):
          0                                  length <= max_length - soft_cache
          (max_length - soft_cache - length) / soft_cache   in between (0 -> -1)
          -1                                 length >= max_length
        unit="tokens" counts `completion_ids` (TRL passes them; set max_length to
        GRPOConfig.max_completion_length, so a truncated completion scores -1);
        unit="chars" counts characters of the text, for calling by hand.

    make_repetition_penalty(ngram_size=3, max_penalty=-1.0)
        (1 - distinct n-grams / all n-grams) * max_penalty over the words of the
        completion; each CJK character is a word of its own, since Chinese has no
        spaces. Fewer words than ngram_size scores 0. (TRL's own version counts
        token ids; this one works on text, so it needs no tokenizer.)
"""

import re

from rewards.extract import completion_text

# A CJK ideograph alone, or a run of letters/digits (CJK excluded, so "苹果apple" splits
# as 苹, 果, apple), or one other visible character such as punctuation.
_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|\S")


def words(text: str) -> list[str]:
    """Lower-cased words of a text; each CJK character counts as one word."""
    return [w.casefold() for w in _WORD.findall(text)]


def overlong_score(length: int, max_length: int, soft_cache: int) -> float:
    if length <= max_length - soft_cache:
        return 0.0
    if length >= max_length:
        return -1.0
    return (max_length - soft_cache - length) / soft_cache


class OverlongPenalty:
    """DAPO soft overlong punishment; see the module docstring."""

    def __init__(self, max_length: int, soft_cache: int, unit: str, name: str):
        self.max_length = max_length
        self.soft_cache = soft_cache
        self.unit = unit
        self.__name__ = name

    def lengths(self, completions, kwargs) -> list[int]:
        if self.unit == "chars":
            return [len(completion_text(c)) for c in completions]
        ids = kwargs.get("completion_ids")
        if ids is None:
            raise ValueError(
                f"reward '{self.__name__}' counts tokens and needs completion_ids=[...] "
                "(TRL passes them); to count characters build it with make_overlong_penalty(..., unit='chars')"
            )
        return [len(i) for i in ids]

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [overlong_score(n, self.max_length, self.soft_cache) for n in self.lengths(completions, kwargs)]

    def __repr__(self) -> str:
        return f"OverlongPenalty(max_length={self.max_length}, soft_cache={self.soft_cache}, unit={self.unit!r})"


def make_overlong_penalty(max_length: int, soft_cache: int | None = None, unit: str = "tokens",
                          name: str = "overlong_penalty") -> OverlongPenalty:
    """Penalise completions near or past `max_length` (default soft_cache: a quarter of it).

    >>> penalty = make_overlong_penalty(max_length=8, soft_cache=4, unit="chars")
    >>> penalty(None, ["abc", "abcdef", "abcdefgh"])
    [0.0, -0.5, -1.0]
    """
    if unit not in ("tokens", "chars"):
        raise ValueError(f"unit must be 'tokens' or 'chars', not {unit!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be positive, not {max_length}")
    soft_cache = max(1, max_length // 4) if soft_cache is None else soft_cache
    if not 0 < soft_cache <= max_length:
        raise ValueError(f"soft_cache must be in 1..max_length ({max_length}), not {soft_cache}")
    return OverlongPenalty(max_length, soft_cache, unit, name)


def repetition_score(text: str, ngram_size: int, max_penalty: float) -> float:
    tokens = words(text)
    if len(tokens) < ngram_size:
        return 0.0
    ngrams = [tuple(tokens[i:i + ngram_size]) for i in range(len(tokens) - ngram_size + 1)]
    repeated = 1 - len(set(ngrams)) / len(ngrams)
    return round(repeated * max_penalty, 6) if repeated else 0.0


class RepetitionPenalty:
    """Share of repeated word n-grams times max_penalty; see the module docstring."""

    def __init__(self, ngram_size: int, max_penalty: float, name: str):
        self.ngram_size = ngram_size
        self.max_penalty = max_penalty
        self.__name__ = name

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [repetition_score(completion_text(c), self.ngram_size, self.max_penalty) for c in completions]

    def __repr__(self) -> str:
        return f"RepetitionPenalty(ngram_size={self.ngram_size}, max_penalty={self.max_penalty})"


def make_repetition_penalty(ngram_size: int = 3, max_penalty: float = -1.0,
                            name: str = "repetition_penalty") -> RepetitionPenalty:
    """Penalise repeated word n-grams, down to `max_penalty` (<= 0) for pure repetition.

    >>> penalty = make_repetition_penalty(ngram_size=2)
    >>> penalty(None, ["the cat sat on the mat", "go go go go go"])
    [0.0, -0.75]
    """
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be at least 1, not {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"max_penalty is a penalty and must be <= 0, not {max_penalty}")
    return RepetitionPenalty(ngram_size, max_penalty, name)
