"""Property-based tests: every registered reward scores *any* completion and never raises.

One exception inside a reward function kills a whole GRPO run, so the rewards
must take whatever a model (or a broken chat template) produces: arbitrary
unicode, chat message lists with None or non-string content, empty lists,
100,000-digit runs, half-open tags. Hypothesis generates those; the examples
are derandomised so CI sees the same cases every run, and capped so the file
takes a few seconds.
"""

import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards import REWARDS, get
from rewards.extract import completion_text
from rewards.numeric import format_number

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,  # a loaded CI machine must not turn slowness into failures; the huge inputs below run anyway
    derandomize=True,  # the same examples every run, so a red CI run is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# Pieces models really write, so random text often looks like an answer and reaches the number readers.
FRAGMENTS = [
    "<answer>", "</answer>", "<reasoning>", "</reasoning>", "\n", " ", "The answer is ", "答案是", "所以答案是",
    "答案：", "\\boxed{", "\\fbox{", "{", "}", "{,}", "\\frac{3}{4}", "$", "$$", "####", "=", "42", "-7", "1,234",
    "0.5", "3/4", "1/0", "%", "元", "个", " or ", "**", "\\(", "\\)", "\\text{ apples}", "−", "１２", ".", "。",
    "9" * 400,  # past float range; the 100,000-digit runs are in PATHOLOGICAL below
]
text = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=25).map("".join),
)
content = st.one_of(
    st.none(), text, st.integers(), st.floats(), st.booleans(),
    st.lists(st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.none(), text, st.integers())}),
        st.just({"type": "image"}), st.none(), text,
    ), max_size=3),
    st.dictionaries(st.text(max_size=5), text, max_size=2),
)
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["assistant", "user", "system", "tool"]), "content": content}),
    st.fixed_dictionaries({"content": content}),  # no role: read as the assistant's
    st.fixed_dictionaries({"role": st.none()}),  # no content at all
    st.none(), text,  # not a message at all, inside a message list
)
completion = st.one_of(text, st.lists(message, max_size=4))
prompt = st.one_of(text, st.lists(message, max_size=3))
gold = st.one_of(
    st.none(), text, st.integers().map(str), st.integers(), st.floats(),
    st.fractions(max_denominator=1000).map(lambda f: format_number(Fraction(f))),
)


@st.composite
def reward_batches(draw):
    """TRL's call for one batch: prompts, completions and the columns, all the same length."""
    n = draw(st.integers(min_value=0, max_value=4))
    return {
        "prompts": draw(st.lists(prompt, min_size=n, max_size=n)),
        "completions": draw(st.lists(completion, min_size=n, max_size=n)),
        "answer": draw(st.lists(gold, min_size=n, max_size=n)),
        "completion_ids": draw(st.lists(st.lists(st.integers(0, 50_000), max_size=700), min_size=n, max_size=n)),
    }


def assert_valid_scores(name, scores, n):
    assert isinstance(scores, list) and len(scores) == n, name
    for score in scores:
        if score is None:
            assert name in MAY_BE_NONE, f"{name} returned None"
            continue
        assert isinstance(score, float) and math.isfinite(score), f"{name} returned {score!r}"
        low, high = (-1.0, 0.0) if name in PENALTIES else (0.0, 1.0)
        assert low <= score <= high, f"{name} returned {score} outside [{low}, {high}]"


PENALTIES = {"overlong_penalty", "repetition_penalty"}
# None means "not applicable": no gold answer for the row, or a prompt without letters.
MAY_BE_NONE = {"correctness", "correctness_any", "numeric_correctness", "exact_match", "language_consistency"}


def test_the_lists_above_name_registered_rewards():
    assert PENALTIES | MAY_BE_NONE <= set(REWARDS)


@PROPERTY_SETTINGS
@given(batch=reward_batches())
def test_every_reward_scores_any_batch(batch):
    for name, reward in REWARDS.items():
        assert_valid_scores(name, reward(**batch), len(batch["completions"]))


@PROPERTY_SETTINGS
@given(completion_text_=text, prompt_text_=text, answer=gold)
def test_string_and_chat_forms_score_alike(completion_text_, prompt_text_, answer):
    chat = [{"role": "assistant", "content": completion_text_}]
    for name, reward in REWARDS.items():
        as_string = reward(prompts=[prompt_text_], completions=[completion_text_], answer=[answer],
                           completion_ids=[[1, 2]])
        as_chat = reward(prompts=[[{"role": "user", "content": prompt_text_}]], completions=[chat],
                         answer=[answer], completion_ids=[[1, 2]])
        assert as_string == as_chat, name


@PROPERTY_SETTINGS
@given(messages=st.lists(message, max_size=5))
def test_completion_text_is_always_a_string(messages):
    assert isinstance(completion_text(messages), str)


# ------------------------------------------------------------ what correct answers score

CORRECTNESS = [REWARDS[n] for n in ("correctness", "correctness_any", "numeric_correctness")]
integers = st.integers(min_value=-10**12, max_value=10**12)


@PROPERTY_SETTINGS
@given(value=integers, template=st.sampled_from([
    "<answer>{n}</answer>", "<answer>\n{n}\n</answer>", "<answer>The answer is {n} apples.</answer>",
    "<answer>答案是 {n}</answer>", "<answer>所以答案是{n}元</answer>", "<answer>$\\boxed{{{n}}}$</answer>",
    "<answer>**{n}**</answer>", "<answer>She has {n} left.</answer>", "<answer>x = {n}</answer>",
    "<reasoning>\n2 + 3 = 5, then 10 more.\n</reasoning>\n<answer>\n{n}\n</answer>",
]), spelled=st.sampled_from(["plain", "commas", "point-zero"]))
def test_the_right_number_scores_one_however_it_is_written(value, template, spelled):
    written = {"plain": str(value), "commas": f"{value:,}", "point-zero": f"{value}.0"}[spelled]
    for reward in CORRECTNESS:
        assert reward(prompts=["q"], completions=[template.format(n=written)], answer=[str(value)]) == [1.0]


@PROPERTY_SETTINGS
@given(a=integers, b=integers, joiner=st.sampled_from([" or ", ", ", " to ", " 或 ", "/", " and maybe "]))
def test_a_hedge_between_two_numbers_scores_zero(a, b, joiner):
    if a == b or (joiner == "/" and b != 0 and Fraction(a, b) == a):
        return  # not a hedge ("7 or 7"), or a fraction that equals the gold ("7/1")
    hedges = [f"<answer>{a}{joiner}{b}</answer>", f"<answer>The answer is {a}{joiner}{b}.</answer>"]
    for reward in CORRECTNESS:
        assert reward(prompts=["q", "q"], completions=hedges, answer=[str(a), str(a)]) == [0.0, 0.0]


@PROPERTY_SETTINGS
@given(value=integers, wrong=integers)
def test_a_wrong_number_scores_zero(value, wrong):
    if wrong == value:
        return
    for reward in CORRECTNESS:
        assert reward(prompts=["q"], completions=[f"<answer>{wrong}</answer>"], answer=[str(value)]) == [0.0]


# ------------------------------------------------------------ inputs that used to raise or hang

HUGE = "9" * 100_000
PATHOLOGICAL = {
    "digits-in-answer": f"<answer>{HUGE}</answer>",
    "digits-bare": HUGE,
    "digits-boxed": f"\\boxed{{{HUGE}}}",
    "digits-answer-is": f"The answer is {HUGE}.",
    "digits-hash": f"#### {HUGE}",
    "digits-fraction": f"<answer>1/{HUGE}</answer>",
    "digits-decimal": f"<answer>0.{HUGE}</answer>",
    "past-float-range": "<answer>" + "1" * 400 + "</answer>",
    "thousands-groups": "<answer>1" + ",000" * 20_000 + "</answer>",
    "unclosed-boxes": "\\boxed{" * 20_000,
    "nested-boxes": "\\boxed{" * 5_000 + "42" + "}" * 5_000,
    "open-tags": "<answer>" * 20_000,
    "tag-soup": "<reasoning>\n</reasoning>\n<answer>\n" * 5_000,
    "hashes": "#" * 100_000,
    "points": "1." * 50_000,
    "signs": "-$-" * 30_000 + "5",
    "unicode-junk": "\udcff\x00\u202e\ufffd𝟘𝟙٣߀" * 5_000,
    "cjk": "答案是" * 20_000,
}


@pytest.mark.parametrize("case", sorted(PATHOLOGICAL))
def test_degenerate_completions_get_a_score(case):
    completion = PATHOLOGICAL[case]
    for form in (completion, [{"role": "assistant", "content": completion}]):
        for name, reward in REWARDS.items():
            scores = reward(prompts=["How many?"], completions=[form], answer=["42"], completion_ids=[[0] * 600])
            assert_valid_scores(name, scores, 1)


def test_a_huge_number_is_not_an_answer_but_does_not_stop_the_run():
    # the three rewards that used to raise OverflowError / ValueError on these
    for name in ("correctness", "correctness_any", "numeric_correctness"):
        assert get(name)(["q"], [f"<answer>{HUGE}</answer>", "<answer>42</answer>"], answer=["42", "42"]) == [0.0, 1.0]
    assert get("is_integer")(["q"], [f"<answer>{HUGE}</answer>"]) == [0.0]


def test_every_real_gsm8k_gold_answer_scores_one():
    """The loader normalises gold answers with rewards.numeric; the rewards must read them all back."""
    import json
    import os
    from pathlib import Path

    from rewards.extract import extract_hash_answer
    from rewards.numeric import normalise_number

    shared = os.environ.get("LAB_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = Path(shared) / "gsm8k"
    if not folder.is_dir():
        pytest.skip(f"real GSM8K not found at {folder}; set LAB_SHARED_DATA to the folder holding gsm8k/")
    for split in ("train.jsonl", "test.jsonl"):
        solutions = [json.loads(line)["answer"] for line in (folder / split).read_text(encoding="utf-8").splitlines()]
        gold = [normalise_number(extract_hash_answer(s)) for s in solutions]
        tagged = [f"<reasoning>\n...\n</reasoning>\n<answer>\n{g}\n</answer>" for g in gold]
        for name in ("correctness", "numeric_correctness", "is_integer"):
            assert get(name)(None, tagged, answer=gold) == [1.0] * len(gold), (split, name)
        assert get("correctness_any")(None, solutions, answer=gold) == [1.0] * len(gold), split
