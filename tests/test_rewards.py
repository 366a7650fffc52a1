"""The reward library: a table of graded completions, the registry, pickling, purity, combine."""

import math
import pickle
import subprocess
import sys

import pytest

import rewards
from rewards import REWARDS, SYSTEM_PROMPT, combine, get, make_overlong_penalty, make_repetition_penalty
from rewards.extract import (
    extract_answer,
    extract_answer_is,
    extract_boxed,
    extract_hash_answer,
    extract_last_number,
    extract_xml_answer,
)
from rewards.numeric import is_integer_text, normalise_number, numbers_equal, parse_number

GOOD = "<reasoning>\n6*12 = 72 muffins, 72-19 = 53 left.\n</reasoning>\n<answer>\n53\n</answer>"
GOOD_ZH = "<reasoning>\n3周有21天，21*5=105元，105-48=57元。\n</reasoning>\n<answer>\n57\n</answer>"
ONE_LINE = "<reasoning>6*12=72</reasoning><answer>53</answer>"
ZH_Q = "小明每天存5元钱，存了3周后，用48元买了一本书。他还剩多少元？"
EN_Q = "Maya bakes 6 trays of 12 muffins and gives 19 away. How many are left?"

chars_overlong = make_overlong_penalty(max_length=100, soft_cache=20, unit="chars")

# (id, reward: registry name or reward function, completion text, keyword args, expected score)
CASES = [
    # correctness: the <answer> compared with the gold answer as a number
    ("correct", "correctness", GOOD, {"answer": "53"}, 1.0),
    ("wrong", "correctness", GOOD.replace("\n53\n", "\n54\n"), {"answer": "53"}, 0.0),
    ("thousands", "correctness", "<answer>1,200</answer>", {"answer": "1200"}, 1.0),
    ("currency", "correctness", "<answer>$1,200.00</answer>", {"answer": "1200"}, 1.0),
    ("decimal-vs-int", "correctness", "<answer>5.0</answer>", {"answer": "5"}, 1.0),
    ("fraction", "correctness", "<answer>3/4</answer>", {"answer": "0.75"}, 1.0),
    ("latex-fraction", "correctness", "<answer>\\frac{3}{4}</answer>", {"answer": "0.75"}, 1.0),
    ("negative", "correctness", "<answer>-2</answer>", {"answer": "-2"}, 1.0),
    ("sign-matters", "correctness", "<answer>2</answer>", {"answer": "-2"}, 0.0),
    ("percent", "correctness", "<answer>25%</answer>", {"answer": "25"}, 1.0),
    ("trailing-units", "correctness", "<answer>53 muffins.</answer>", {"answer": "53"}, 1.0),
    ("bold", "correctness", "<answer>**53**</answer>", {"answer": "53"}, 1.0),
    ("no-tags", "correctness", "The answer is 53.", {"answer": "53"}, 0.0),
    ("empty", "correctness", "", {"answer": "53"}, 0.0),
    ("empty-tag", "correctness", "<answer></answer>", {"answer": "53"}, 0.0),
    ("unclosed-tag", "correctness", "<reasoning>\n...\n</reasoning>\n<answer>\n53", {"answer": "53"}, 0.0),
    ("nested-tags", "correctness", "<answer><answer>53</answer></answer>", {"answer": "53"}, 1.0),
    ("last-answer-wins", "correctness", "<answer>50</answer> wait, <answer>53</answer>", {"answer": "53"}, 1.0),
    ("ambiguous", "correctness", "<answer>3 or 4</answer>", {"answer": "3"}, 0.0),
    ("gold-missing", "correctness", GOOD, {"answer": None}, None),
    ("gold-empty", "correctness", GOOD, {"answer": " "}, None),
    ("chinese-units", "correctness", GOOD_ZH.replace("\n57\n", "\n57元\n"), {"answer": "57"}, 1.0),
    ("fullwidth-digits", "correctness", "<answer>５７</answer>", {"answer": "57"}, 1.0),
    ("float-tolerance", "correctness", "<answer>0.3333333333</answer>", {"answer": "1/3"}, 1.0),
    ("outside-tolerance", "correctness", "<answer>0.333</answer>", {"answer": "1/3"}, 0.0),
    ("text-gold", "correctness", "<answer>Paris</answer>", {"answer": "paris"}, 1.0),
    # answers as models write them inside the tags (issue 14): one number stated in words, LaTeX or Chinese
    ("sentence-in-tags", "correctness", "<answer>The answer is 42 apples.</answer>", {"answer": "42"}, 1.0),
    ("zh-lead-in-tags", "correctness", "<answer>答案是 42</answer>", {"answer": "42"}, 1.0),
    ("zh-sentence-in-tags", "correctness", "<answer>所以答案是42元</answer>", {"answer": "42"}, 1.0),
    ("zh-no-space-number", "correctness", "<answer>共42个苹果</answer>", {"answer": "42"}, 1.0),
    ("boxed-in-tags", "correctness", "<answer>$\\boxed{42}$</answer>", {"answer": "42"}, 1.0),
    ("equation-in-tags", "correctness", "<answer>6*12 - 19 = 53</answer>", {"answer": "53"}, 1.0),
    ("one-number-sentence", "correctness", "<answer>She has 1,234 stamps left.</answer>", {"answer": "1234"}, 1.0),
    ("negative-sentence", "correctness", "<answer>The temperature is -5 degrees.</answer>", {"answer": "-5"}, 1.0),
    ("hedge-in-tags", "correctness", "<answer>41 or 42</answer>", {"answer": "42"}, 0.0),
    ("hedge-sentence", "correctness", "<answer>The answer is 41 or 42.</answer>", {"answer": "42"}, 0.0),
    ("two-numbers-no-marker", "correctness", "<answer>3 boxes of 14</answer>", {"answer": "14"}, 0.0),
    ("huge-digit-run", "correctness", "<answer>" + "9" * 100_000 + "</answer>", {"answer": "42"}, 0.0),
    ("past-float-range", "numeric_correctness", "<answer>" + "1" * 400 + "</answer>", {"answer": "42"}, 0.0),
    # correctness_any: other places an answer can hide
    ("boxed-nested", "correctness_any", "so \\boxed{\\frac{3}{4}}", {"answer": "0.75"}, 1.0),
    ("hash", "correctness_any", "48+24 = 72\n#### 72", {"answer": "72"}, 1.0),
    ("answer-is", "correctness_any", "So the answer is 42.", {"answer": "42"}, 1.0),
    ("answer-is-zh", "correctness_any", "所以答案是 42。", {"answer": "42"}, 1.0),
    ("answer-colon-zh", "correctness_any", "答案：42个", {"answer": "42"}, 1.0),
    ("last-number", "correctness_any", "so she has 1,250 left", {"answer": "1250"}, 1.0),
    ("no-number", "correctness_any", "I do not know.", {"answer": "7"}, 0.0),
    ("xml-before-last-number", "correctness_any", "<answer>7</answer> and 9 more", {"answer": "7"}, 1.0),
    ("zh-no-tags", "correctness_any", "所以答案是42元", {"answer": "42"}, 1.0),
    ("boxed", "correctness_any", "\\boxed{42}", {"answer": "42"}, 1.0),
    ("boxed-latex-thousands", "correctness_any", "\\boxed{1{,}234}", {"answer": "1234"}, 1.0),
    ("boxed-with-units", "correctness_any", "so \\boxed{42 \\text{ apples}}", {"answer": "42"}, 1.0),
    ("dollars", "correctness_any", "$42", {"answer": "42"}, 1.0),
    ("point-zero", "correctness_any", "42.0", {"answer": "42"}, 1.0),
    ("thousands-bare", "correctness_any", "1,234", {"answer": "1234"}, 1.0),
    ("negative-answer-is", "correctness_any", "The answer is -5.", {"answer": "-5"}, 1.0),
    ("answer-is-then-check", "correctness_any", "The answer is 42. Check: 6*7=42", {"answer": "42"}, 1.0),
    ("hedge-answer-is", "correctness_any", "The answer is 41 or 42.", {"answer": "42"}, 0.0),
    ("hedge-tags-win", "correctness_any", "<answer>41 or 42</answer> so 42", {"answer": "42"}, 0.0),
    ("huge-bare", "correctness_any", "9" * 100_000, {"answer": "42"}, 0.0),
    # exact and numeric matching side by side
    ("exact-text", "exact_match", "<answer> Paris. </answer>", {"answer": "paris"}, 1.0),
    ("exact-is-not-numeric", "exact_match", "<answer>53.0</answer>", {"answer": "53"}, 0.0),
    ("numeric-is", "numeric_correctness", "<answer>53.0</answer>", {"answer": "53"}, 1.0),
    ("exact-gold-missing", "exact_match", "<answer>53</answer>", {"answer": ""}, None),
    # is_integer
    ("int", "is_integer", "<answer>42</answer>", {}, 1.0),
    ("not-int", "is_integer", "<answer>4.5</answer>", {}, 0.0),
    ("int-thousands", "is_integer", "<answer>1,200</answer>", {}, 1.0),
    ("int-point-zero", "is_integer", "<answer>5.0</answer>", {}, 1.0),
    ("int-no-tag", "is_integer", "42", {}, 0.0),
    ("int-words", "is_integer", "<answer>forty-two</answer>", {}, 0.0),
    ("int-sentence", "is_integer", "<answer>The answer is 42.</answer>", {}, 1.0),
    ("int-huge", "is_integer", "<answer>" + "9" * 100_000 + "</answer>", {}, 0.0),
    # strict format
    ("strict-good", "strict_format", GOOD, {}, 1.0),
    ("strict-trailing-newline", "strict_format", GOOD + "\n", {}, 1.0),
    ("strict-chinese", "strict_format", GOOD_ZH, {}, 1.0),
    ("strict-one-line", "strict_format", ONE_LINE, {}, 0.0),
    ("strict-preamble", "strict_format", "Sure!\n" + GOOD, {}, 0.0),
    ("strict-trailing-text", "strict_format", GOOD + "\nHope this helps", {}, 0.0),
    ("strict-two-answers", "strict_format", GOOD + "\n<answer>\n54\n</answer>", {}, 0.0),
    ("strict-nested", "strict_format",
     "<reasoning>\n<reasoning>\nx\n</reasoning>\n</reasoning>\n<answer>\n5\n</answer>", {}, 0.0),
    ("strict-blank-reasoning", "strict_format", "<reasoning>\n \n</reasoning>\n<answer>\n5\n</answer>", {}, 0.0),
    ("strict-empty", "strict_format", "", {}, 0.0),
    # soft format
    ("soft-good", "soft_format", GOOD, {}, 1.0),
    ("soft-one-line", "soft_format", ONE_LINE, {}, 1.0),
    ("soft-trailing-text", "soft_format", ONE_LINE + " done", {}, 1.0),
    ("soft-wrong-order", "soft_format", "<answer>5</answer><reasoning>x</reasoning>", {}, 0.0),
    ("soft-answer-only", "soft_format", "<answer>5</answer>", {}, 0.0),
    ("soft-preamble", "soft_format", "Sure! " + ONE_LINE, {}, 0.0),
    # xml tag counting, partial credit
    ("count-all", "xml_count", GOOD, {}, 1.0),
    ("count-answer-only", "xml_count", "<answer>5</answer>", {}, 0.5),
    ("count-trailing", "xml_count", GOOD + "\n" + "x" * 20, {}, 0.98),
    ("count-trailing-capped", "xml_count", GOOD + "x" * 1000, {}, 0.75),
    ("count-duplicate", "xml_count", "<reasoning>a</reasoning><answer>1</answer><answer>2</answer>", {}, 0.5),
    ("count-empty", "xml_count", "", {}, 0.0),
    # overlong penalty (characters, 100 max, last 20 soft)
    ("short", chars_overlong, "x" * 50, {}, 0.0),
    ("at-soft-edge", chars_overlong, "x" * 80, {}, 0.0),
    ("in-soft-zone", chars_overlong, "x" * 90, {}, -0.5),
    ("at-max", chars_overlong, "x" * 100, {}, -1.0),
    ("past-max", chars_overlong, "x" * 150, {}, -1.0),
    # repetition penalty (word trigrams; a CJK character is a word)
    ("no-repeat", "repetition_penalty", "the cat sat on the mat", {}, 0.0),
    ("loop", "repetition_penalty", "a b c a b c a b c", {}, -0.571429),
    ("loop-zh", "repetition_penalty", "好好好好好", {}, -0.666667),
    ("too-short", "repetition_penalty", "hi there", {}, 0.0),
    ("repeat-empty", "repetition_penalty", "", {}, 0.0),
    # language consistency (prompt's language vs the reasoning's)
    ("zh-zh", "language_consistency", GOOD_ZH, {"prompt": ZH_Q}, 1.0),
    ("zh-en", "language_consistency", GOOD, {"prompt": ZH_Q}, 0.0),
    ("en-en", "language_consistency", GOOD, {"prompt": EN_Q}, 1.0),
    ("en-zh", "language_consistency", GOOD_ZH, {"prompt": EN_Q}, 0.0),
    ("zh-mixed", "language_consistency", "<reasoning>\n苹果 costs 5 dollars 果\n</reasoning>", {"prompt": ZH_Q}, 0.6),
    ("zh-no-tags", "language_consistency", "一共有一百零五元", {"prompt": ZH_Q}, 1.0),
    ("zh-digits-only", "language_consistency", "<answer>57</answer>", {"prompt": ZH_Q}, 0.0),
    ("prompt-no-letters", "language_consistency", GOOD, {"prompt": "12+30=?"}, None),
]


def as_chat(completion: str) -> list[dict]:
    return [{"role": "assistant", "content": completion}]


def chat_prompt(question: str) -> list[dict]:
    # An English system prompt above the user's question, as the GSM8K loader builds it.
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def score(reward, completion: str, kwargs: dict, form: str):
    reward = get(reward) if isinstance(reward, str) else reward
    question = kwargs.get("prompt", EN_Q)
    prompts = [question if form == "string" else chat_prompt(question)]
    completions = [completion if form == "string" else as_chat(completion)]
    extra = {k: [v] for k, v in kwargs.items() if k != "prompt"}
    result = reward(prompts=prompts, completions=completions, **extra)
    assert isinstance(result, list) and len(result) == 1
    return result[0]


@pytest.mark.parametrize("form", ["string", "chat"])
@pytest.mark.parametrize("case_id, reward, completion, kwargs, expected", CASES, ids=[c[0] for c in CASES])
def test_reward_table(case_id, reward, completion, kwargs, expected, form):
    got = score(reward, completion, kwargs, form)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_table_is_large_enough():
    assert len(CASES) >= 60


# ---------------------------------------------------------------- extractors and numbers

@pytest.mark.parametrize("text, expected", [
    ("x \\boxed{\\frac{1}{2}} y", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{ {2} }", "{2}"),
    ("\\boxed{unclosed", None),
    ("\\boxed{1} \\boxed{unclosed", "1"),
    ("\\boxed{" * 2000 + "7}", "7"),
    ("no box", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("extractor, text, expected", [
    (extract_xml_answer, "<answer> 5 </answer>", "5"),
    (extract_xml_answer, "<ANSWER>5</ANSWER>", "5"),
    (extract_xml_answer, "answer: 5", None),
    (extract_hash_answer, "a\nb\n#### 1,200", "1,200"),
    (extract_hash_answer, "####", None),
    (extract_hash_answer, "no marker 5", None),
    (extract_answer_is, "The final answer is: $18.", "$18"),
    (extract_answer_is, "The answer is Paris.", "Paris"),
    (extract_answer_is, "最终答案为-3。", "-3"),
    (extract_answer_is, "nothing here", None),
    (extract_answer_is, "The answer isn't obvious; my answer: 12", "12"),
    (extract_answer_is, "Swansong answer is 3", "3"),
    (extract_answer_is, "The answer is 42 apples.", "42"),
    (extract_answer_is, "The answer is 41 or 42.", "41 or 42"),
    (extract_answer_is, "The answer is 4.5. Check: 9/2 = 4.5", "4.5"),
    (extract_last_number, "第3天有42个", "42"),
    (extract_last_number, "from 3 to -4.5 then 7/8", "7/8"),
    (extract_last_number, "costs $1,250.", "$1,250"),
    (extract_last_number, "a loss of -$5 today", "-$5"),
    (extract_last_number, "", None),
    (extract_last_number, None, None),
])
def test_extractors(extractor, text, expected):
    assert extractor(text) == expected


def test_extract_answer_order_and_unknown_name():
    text = "#### 3\nThe answer is 4"
    assert extract_answer(text) == "3"
    assert extract_answer(text, order=("answer_is", "hash")) == "4"
    with pytest.raises(ValueError, match="unknown extractor 'box'"):
        extract_answer(text, order=("box",))


@pytest.mark.parametrize("text, expected", [
    ("72", "72"), ("1,200", "1200"), ("$1,234,567.50", "1234567.5"), ("-$5", "-5"), ("$-5", "-5"),
    ("5.0", "5"), (".5", "0.5"), ("3/4", "0.75"), ("2/6", "1/3"), ("\\dfrac{6}{4}", "1.5"), ("50%", "50"),
    ("18 dollars.", "18"), ("42个", "42"), ("−7", "-7"), ("$42$", "42"), ("1{,}000", "1000"),
    ("1,5", None), ("3 or 4", None), ("1/0", None), ("abc", None), ("", None), (None, None), ("-$-5", None),
])
def test_normalise_number(text, expected):
    assert normalise_number(text) == expected


def test_numbers_equal_and_integers():
    assert numbers_equal("0.75", "3/4") and numbers_equal("5", "5.000") and not numbers_equal("5", None)
    assert numbers_equal("100.4", "100", rel_tol=0.01) and not numbers_equal("100.4", "100")
    assert is_integer_text("1,000") and not is_integer_text("2.5") and not is_integer_text("many")
    assert parse_number(7) == 7 and parse_number(0.25) == parse_number("1/4")


# ---------------------------------------------------------------- the registry

REGISTRY_KWARGS = {"answer": ["53", "57"], "completion_ids": [[1, 2, 3], list(range(600))]}


def call_both_forms(reward):
    strings = reward(prompts=[EN_Q, ZH_Q], completions=[GOOD, GOOD_ZH], **REGISTRY_KWARGS)
    chats = reward(prompts=[chat_prompt(EN_Q), chat_prompt(ZH_Q)], completions=[as_chat(GOOD), as_chat(GOOD_ZH)],
                   **REGISTRY_KWARGS)
    return strings, chats


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_registry_entry_scores_both_forms_alike(name):
    strings, chats = call_both_forms(REWARDS[name])
    assert strings == chats
    assert len(strings) == 2
    for s in strings:
        assert s is None or (isinstance(s, float) and -1.0 <= s <= 1.0 and not math.isnan(s))


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_registry_entry_is_picklable_and_named(name):
    reward = REWARDS[name]
    assert isinstance(reward.__name__, str) and reward.__name__
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == reward.__name__
    assert call_both_forms(clone) == call_both_forms(reward)


def test_reward_names_are_unique():
    names = [r.__name__ for r in REWARDS.values()]
    assert len(names) == len(set(names))


def test_accepts_the_extra_keywords_trl_passes():
    trl_extras = {"trainer_state": None, "log_extra": print, "log_metric": print, "solution": ["..."],
                  "source": ["x:1"]}
    for name, reward in REWARDS.items():
        assert len(reward(prompts=[EN_Q], completions=[GOOD], answer=["53"], completion_ids=[[1]], **trl_extras)) == 1


def test_get_unknown_name_lists_the_registry():
    with pytest.raises(KeyError, match="unknown reward 'corectness'.*correctness, correctness_any"):
        get("corectness")


def test_get_with_options_rebuilds_parametrised_rewards():
    penalty = get("overlong_penalty", max_length=10, soft_cache=5, unit="chars")
    assert penalty(None, ["x" * 8]) == [pytest.approx(-0.6)]
    assert get("repetition_penalty", ngram_size=1)(None, ["a a"]) == [-0.5]
    lenient = get("correctness", rel_tol=0.01)
    assert lenient(None, ["<answer>100.4</answer>"], answer=["100"]) == [1.0]
    assert lenient.__name__ == "correctness_reward"
    with pytest.raises(TypeError, match="takes no options"):
        get("strict_format", strict=False)


def test_misconfigured_rewards_fail_clearly():
    with pytest.raises(ValueError, match="'answer' column"):
        get("correctness")([EN_Q], [GOOD])
    with pytest.raises(ValueError, match="2 gold answers for 1 completions"):
        get("correctness")([EN_Q], [GOOD], answer=["1", "2"])
    with pytest.raises(ValueError, match="needs completion_ids"):
        get("overlong_penalty")([EN_Q], [GOOD])
    with pytest.raises(ValueError):
        make_overlong_penalty(100, soft_cache=200)
    with pytest.raises(ValueError):
        make_repetition_penalty(max_penalty=0.5)


def test_token_overlong_penalty_counts_completion_ids():
    penalty = make_overlong_penalty(max_length=64)  # soft zone: the last 16 tokens
    assert penalty([EN_Q] * 3, ["a", "b", "c"], completion_ids=[[0] * 40, [0] * 56, [0] * 64]) == [0.0, -0.5, -1.0]


def test_multimodal_content_parts_are_read_as_text():
    completion = [{"role": "assistant", "content": [{"type": "text", "text": "<answer>53</answer>"}]}]
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ZH_Q}]}]
    assert get("correctness")([prompt], [completion], answer=["53"]) == [1.0]
    assert get("language_consistency")([prompt], [as_chat(GOOD_ZH)]) == [1.0]


def test_import_is_pure():
    code = (
        "import sys, rewards; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'trl', 'datasets', 'lab_utils', 'data_loaders', 'scripts')); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------- combine

def test_combine_weighted_sum():
    both = combine(["correctness", "strict_format"], [2.0, 0.5])
    scores = both([EN_Q] * 3, [GOOD, ONE_LINE, "nothing"], answer=["53", "53", "53"])
    assert scores == [2.5, 2.0, 0.0]
    assert both.__name__ == "combined_reward"


def test_combine_weights_as_dict_default_and_gsm8k_recipe():
    recipe = combine(list(rewards.GSM8K_WEIGHTS), rewards.GSM8K_WEIGHTS, name="gsm8k_reward")
    assert recipe([EN_Q], [GOOD], answer=["53"]) == [pytest.approx(2.0 + 0.5 * 4)]
    assert recipe.__name__ == "gsm8k_reward"
    plain = combine(["soft_format", "xml_count"])
    assert plain([EN_Q], [ONE_LINE]) == [2.0]


def test_combine_none_rule():
    # None components are left out of the sum; all-None gives None (unscorable, not zero).
    only_gold = combine(["correctness", "exact_match"], [1.0, 1.0])
    assert only_gold([EN_Q] * 2, [GOOD, GOOD], answer=[None, "53"]) == [None, 2.0]
    mixed = combine(["correctness", "soft_format"], [2.0, 1.0])
    assert mixed([EN_Q], [GOOD], answer=[None]) == [1.0]


def test_combine_accepts_functions_and_pickles():
    custom = combine([make_overlong_penalty(10, 5, unit="chars"), "soft_format"], [1.0, 3.0])
    clone = pickle.loads(pickle.dumps(custom))
    assert clone([EN_Q], [ONE_LINE]) == custom([EN_Q], [ONE_LINE]) == [-1.0 + 3.0]


def test_combine_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2 rewards but 1 weights"):
        combine(["correctness", "soft_format"], [1.0])
    with pytest.raises(ValueError, match="not combined: xml_count"):
        combine(["soft_format"], {"xml_count": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        combine([])
    with pytest.raises(KeyError, match="unknown reward"):
        combine(["nope"])


def test_describe_has_a_line_per_reward():
    table = rewards.describe()
    assert set(table) == set(REWARDS) and all(table.values())


@pytest.mark.parametrize("module", ["rewards.correctness", "rewards.format", "rewards.language", "rewards.penalties"])
def test_the_docstring_examples_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module}: no >>> examples"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed (see the output above)"
