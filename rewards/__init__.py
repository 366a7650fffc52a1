"""Pure reward functions for GRPO, and the registry that names them.

Conventions (every reward here follows them):
- Signature: TRL's GRPO reward signature
      f(prompts, completions, **kwargs) -> list[float | None]
  one score per completion. `completions` (and `prompts`) are plain strings or
  chat-message lists ([{"role": "assistant", "content": "..."}]); both forms
  score the same. TRL passes every dataset column as a keyword list (e.g.
  `answer=[...]`, one gold answer per completion) plus `completion_ids`,
  `trainer_state` and logging hooks; rewards take what they need and ignore
  the rest via **kwargs.
- None means "not applicable to this completion" (e.g. no gold answer for the
  row). TRL turns None into NaN and leaves it out of that row's reward sum.
- Ranges: rewards are in [0, 1], penalties in [-1, 0]; the *weights* (in
  TRL's GRPOConfig.reward_weights, or `combine`) set their importance.
- Total: every reward returns a score for any completion (any text, any chat
  message list, None content, 100,000-digit runs) and never raises on one;
  only a setup mistake (a missing `answer` column) raises, before scoring.
  tests/test_rewards_properties.py checks this with hypothesis.
- Pure: no torch, nothing of the lab imported, no global mutable state, no
  I/O. Every reward is picklable (a module-level function, or a small
  callable class from a factory) and has a `__name__`, which TRL logs as
  `rewards/<name>/mean`.

Modules:
    extract      find the final answer: <answer> tags, "#### n", \\boxed{}, "the answer is", last number
    numeric      parse, normalise and compare numbers ("$1,200.00" == "1200", "3/4" == "0.75")
    correctness  right answer? exact text, numeric with tolerance, is-an-integer;
                 answer_value reads the one number an answer states ("The answer is 42 apples.")
    format       SYSTEM_PROMPT and the reasoning/answer format rewards (strict, soft, tag counting)
    penalties    overlong (DAPO soft punishment) and n-gram repetition penalties
    language     the completion's language matches the prompt's (Chinese vs Latin script)

Registry:
    REWARDS                  name -> reward function (defaults for the parametrised ones)
    get(name, **options)     one reward by name; options rebuild a parametrised one,
                             e.g. get("overlong_penalty", max_length=256)
    combine(names, weights)  one reward function: the weighted sum of several
    GSM8K_WEIGHTS            the Unsloth GSM8K recipe's weights, for these [0, 1] ranges

In a GRPO script, prefer passing the functions separately —
`GRPOTrainer(reward_funcs=[get(n) for n in names], args=GRPOConfig(reward_weights=weights))`
— so TRL logs each one; `combine` is for when one function is wanted (a
notebook table, another trainer, an evaluation).
"""

from functools import partial

from rewards.correctness import (
    ANY_FORMAT,
    XML_ONLY,
    CorrectnessReward,
    answer_value,
    exact_match_reward,
    is_integer_reward,
    make_correctness_reward,
    numeric_correctness_reward,
)
from rewards.extract import (
    completion_text,
    extract_answer,
    extract_answer_is,
    extract_boxed,
    extract_hash_answer,
    extract_last_number,
    extract_xml_answer,
    extract_xml_tag,
    prompt_text,
)
from rewards.format import (
    SYSTEM_PROMPT,
    SYSTEM_PROMPT_ZH,
    soft_format_reward,
    strict_format_reward,
    xml_count_reward,
)
from rewards.language import language_consistency_reward
from rewards.numeric import normalise_number, numbers_equal, parse_number, values_close
from rewards.penalties import make_overlong_penalty, make_repetition_penalty

# The package's public names: the registry below and every reward module's re-exported names.
__all__ = [
    # registry
    "REWARDS", "FACTORIES", "GSM8K_WEIGHTS", "get", "reward_name", "CombinedReward", "combine", "describe",
    # correctness
    "ANY_FORMAT", "XML_ONLY", "CorrectnessReward", "answer_value", "exact_match_reward", "is_integer_reward",
    "make_correctness_reward", "numeric_correctness_reward",
    # extract
    "completion_text", "extract_answer", "extract_answer_is", "extract_boxed", "extract_hash_answer",
    "extract_last_number", "extract_xml_answer", "extract_xml_tag", "prompt_text",
    # format
    "SYSTEM_PROMPT", "SYSTEM_PROMPT_ZH", "soft_format_reward", "strict_format_reward", "xml_count_reward",
    # language, numeric, penalties
    "language_consistency_reward", "normalise_number", "numbers_equal", "parse_number", "values_close",
    "make_overlong_penalty", "make_repetition_penalty",
]

REWARDS = {
    "correctness": make_correctness_reward(XML_ONLY, name="correctness_reward"),
    "correctness_any": make_correctness_reward(ANY_FORMAT, name="correctness_any_reward"),
    "numeric_correctness": numeric_correctness_reward,
    "exact_match": exact_match_reward,
    "is_integer": is_integer_reward,
    "strict_format": strict_format_reward,
    "soft_format": soft_format_reward,
    "xml_count": xml_count_reward,
    # Token-counting default; a GRPO script should pass its own max_completion_length via get().
    "overlong_penalty": make_overlong_penalty(max_length=512, soft_cache=128),
    "repetition_penalty": make_repetition_penalty(ngram_size=3, max_penalty=-1.0),
    "language_consistency": language_consistency_reward,
}

# The registry names whose reward is built by a factory, so get(name, **options) can rebuild it.
FACTORIES = {
    "correctness": partial(make_correctness_reward, name="correctness_reward"),
    "correctness_any": partial(make_correctness_reward, extractors=ANY_FORMAT, name="correctness_any_reward"),
    "overlong_penalty": make_overlong_penalty,
    "repetition_penalty": make_repetition_penalty,
}

# Unsloth's GSM8K GRPO recipe (correctness 2.0, integer 0.5, strict 0.5, soft 0.5, tag count
# up to 0.5), restated as weights because every reward here is scaled to [0, 1].
GSM8K_WEIGHTS = {
    "correctness": 2.0,
    "is_integer": 0.5,
    "strict_format": 0.5,
    "soft_format": 0.5,
    "xml_count": 0.5,
}


def get(name: str, **options):
    """The reward registered as `name`; options rebuild a parametrised one (see FACTORIES)."""
    if name not in REWARDS:
        raise KeyError(f"unknown reward '{name}'; registered rewards: {', '.join(sorted(REWARDS))}")
    if not options:
        return REWARDS[name]
    if name not in FACTORIES:
        raise TypeError(
            f"reward '{name}' takes no options (got {', '.join(options)}); "
            f"parametrised rewards: {', '.join(sorted(FACTORIES))}"
        )
    return FACTORIES[name](**options)


def reward_name(reward) -> str:
    return getattr(reward, "__name__", type(reward).__name__)


class CombinedReward:
    """The weighted sum of several rewards, as one reward function.

    None rule (the same as TRL's when it sums several reward functions): a
    component that returns None for a completion is left out of that
    completion's sum; if *every* component returns None, the combined score is
    None too, so the trainer can tell "unscorable" from "scored 0".
    """

    def __init__(self, rewards: list, weights: list[float], name: str):
        self.rewards = rewards
        self.weights = weights
        self.__name__ = name

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        columns = [reward(prompts=prompts, completions=completions, **kwargs) for reward in self.rewards]
        combined = []
        for scores in zip(*columns, strict=True):
            present = [(w, s) for w, s in zip(self.weights, scores) if s is not None]
            combined.append(sum(w * s for w, s in present) if present else None)
        return combined

    def __repr__(self) -> str:
        parts = ", ".join(f"{w} * {reward_name(r)}" for r, w in zip(self.rewards, self.weights))
        return f"CombinedReward({parts})"


def combine(names, weights=None, name: str = "combined_reward") -> CombinedReward:
    """One reward: sum of weight * reward over `names` (registry names or reward functions).

    `weights` is a list parallel to `names`, a dict name -> weight, or None for 1.0 each.
    """
    names = list(names)
    if not names:
        raise ValueError("combine needs at least one reward")
    if weights is None:
        weights = [1.0] * len(names)
    elif isinstance(weights, dict):
        unknown = set(weights) - {n for n in names if isinstance(n, str)}
        if unknown:
            raise ValueError(f"weights given for rewards not combined: {', '.join(sorted(unknown))}")
        weights = [weights.get(n, 1.0) if isinstance(n, str) else 1.0 for n in names]
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(f"combine got {len(names)} rewards but {len(weights)} weights")
    rewards = [get(n) if isinstance(n, str) else n for n in names]
    return CombinedReward(rewards, weights, name)


def describe() -> dict:
    """Registry name -> the first line of that reward's docstring (for tables in notebooks)."""
    return {name: ((reward.__doc__ or "").strip().splitlines() or [""])[0] for name, reward in REWARDS.items()}
