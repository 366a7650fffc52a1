"""The GSM8K loader: the bundled sample, real GSM8K rows, bad rows, the prompt-length filter."""

import json
import re
from pathlib import Path

import pytest

from data_loaders.common import DataError, SkipReport
from data_loaders.gsm8k import load_gsm8k, prompt_token_count, target_format_answer, worked_solution_conversations
from lab_utils.core.paths import LabPathError
from rewards import SYSTEM_PROMPT, SYSTEM_PROMPT_ZH, get
from rewards.numeric import parse_number
from tests.helpers import shared_data_dir, write_jsonl

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "gsm8k_sample.jsonl"


@pytest.fixture
def real_gsm8k(monkeypatch) -> Path:
    folder = shared_data_dir()
    if not (folder / "gsm8k" / "test.jsonl").exists():
        pytest.skip(f"real GSM8K not found at {folder}/gsm8k; set LAB_SHARED_DATA to the folder holding gsm8k/")
    monkeypatch.setenv("LAB_DATA_DIR", str(folder))
    return folder / "gsm8k"


# ---------------------------------------------------------------- the bundled sample

def test_sample_loads_with_the_documented_schema():
    report = SkipReport()
    ds = load_gsm8k("gsm8k_sample.jsonl", report=report)
    assert len(ds) == 41 and report.skipped == [] and report.kept == 41
    assert ds.column_names == ["prompt", "answer", "solution", "source"]
    row = ds[0]
    assert row["prompt"] == [{"role": "system", "content": SYSTEM_PROMPT},
                             {"role": "user", "content": row["prompt"][1]["content"]}]
    assert row["prompt"][1]["content"].startswith("Maya bakes 6 trays")
    assert row["answer"] == "53" and row["source"] == "gsm8k_sample.jsonl:1"
    assert len(set(ds["source"])) == len(ds)
    assert all(parse_number(a) is not None for a in ds["answer"])
    assert "23.5" in ds["answer"] and "-2" in ds["answer"] and "48.6" in ds["answer"]
    assert not any("<<" in s or "####" in s for s in ds["solution"])
    assert sum(bool(re.search(r"[\u4e00-\u9fff]", p[1]["content"])) for p in ds["prompt"]) == 5


def test_sample_calculator_annotations_are_right():
    # The sample is ours: every <<expression=result>> must compute, and lead to the final answer.
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        worked = json.loads(line)["answer"]
        steps = re.findall(r"<<([-+*/().\d ]+)=([-\d.]+)>>", worked)
        assert steps and len(steps) == worked.count("<<")
        for expression, result in steps:
            assert eval(expression) == pytest.approx(float(result)), expression
        # the last line states the final answer (some end by rounding: "12.5, so 12 full pieces")
        final = worked.rsplit("####", 1)[1].strip()
        last_line = worked.rsplit("####", 1)[0].strip().splitlines()[-1]
        assert final in re.findall(r"-?\d+(?:\.\d+)?", last_line), last_line


def test_gold_solutions_score_full_marks_with_the_rewards():
    ds = load_gsm8k("gsm8k_sample.jsonl")
    completions = [target_format_answer(s, a) for s, a in zip(ds["solution"], ds["answer"])]
    for name in ("correctness", "strict_format", "is_integer"):
        scores = get(name)(ds["prompt"], completions, answer=ds["answer"])
        expected = [1.0 if name != "is_integer" or float(a).is_integer() else 0.0 for a in ds["answer"]]
        assert scores == expected, name
    # the gold worked text itself ("... #### 72") is graded right by the any-format correctness
    raw = [json.loads(line)["answer"] for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert get("correctness_any")(ds["prompt"], raw, answer=ds["answer"]) == [1.0] * len(ds)


def test_worked_solutions_become_sft_conversations_in_the_target_format(tokenizer):
    from lab_utils.models.chat import IGNORE_INDEX
    from lab_utils.training.batching import tokenize_dataset

    prompts = load_gsm8k("gsm8k_sample.jsonl", limit=6)
    conversations = worked_solution_conversations(prompts)
    assert conversations.column_names == ["messages", "source"] and conversations["source"] == prompts["source"]
    for row, prompt in zip(conversations, prompts):
        assert row["messages"][:-1] == prompt["prompt"] and row["messages"][-1]["role"] == "assistant"
    replies = [m[-1]["content"] for m in conversations["messages"]]
    assert get("strict_format")(None, replies) == [1.0] * 6
    assert get("correctness")(None, replies, answer=prompts["answer"]) == [1.0] * 6
    # the loss falls on the reply only: the labelled tokens decode to the formatted solution
    tokens = tokenize_dataset(conversations, tokenizer, max_length=512)
    labelled = tokenizer.decode([t for t in tokens[0]["labels"] if t != IGNORE_INDEX])
    assert labelled.startswith("<reasoning>\n") and replies[0] in labelled and "Respond in" not in labelled


def test_a_row_without_worked_solution_cannot_be_a_warm_up_row(tmp_path):
    path = write_jsonl(tmp_path / "bare.jsonl", [{"question": "What is 6 times 7?", "answer": "#### 42"}])
    with pytest.raises(ValueError, match="bare.jsonl:1: no worked solution"):
        worked_solution_conversations(load_gsm8k(path))


def test_limit_and_system_prompt_options():
    ds = load_gsm8k(str(SAMPLE), limit=5, system_prompt=None)
    assert len(ds) == 5
    assert all(p[0]["role"] == "user" and len(p) == 1 for p in ds["prompt"])
    zh = load_gsm8k("gsm8k_sample.jsonl", limit=1, system_prompt=SYSTEM_PROMPT_ZH)
    assert zh[0]["prompt"][0]["content"] == SYSTEM_PROMPT_ZH


# ---------------------------------------------------------------- real GSM8K

def test_real_gsm8k_test_split(real_gsm8k):
    report = SkipReport()
    ds = load_gsm8k("gsm8k", split_file="test.jsonl", report=report)
    raw = [json.loads(line) for line in (real_gsm8k / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(ds) == len(raw) == 1319 and report.skipped == []
    assert ds[0]["source"] == "test.jsonl:1"
    assert ds[0]["prompt"][1]["content"] == raw[0]["question"]
    # "#### 1,200"-style gold answers arrive without the separator, and the rewards read all of them
    with_commas = [i for i, r in enumerate(raw) if "," in r["answer"].rsplit("####", 1)[1]]
    assert with_commas and all("," not in ds[i]["answer"] for i in with_commas)
    raw_answers = [r["answer"] for r in raw]
    assert get("correctness_any")(ds["prompt"], raw_answers, answer=ds["answer"]) == [1.0] * len(ds)


def test_real_gsm8k_train_with_limit(real_gsm8k):
    ds = load_gsm8k("gsm8k", limit=100)
    assert len(ds) == 100 and ds[0]["answer"] == "72" and ds[99]["source"] == "train.jsonl:100"


# ---------------------------------------------------------------- bad input

def test_bad_rows_are_skipped_with_reasons(tmp_path):
    good = {"question": "What is 2+3?", "answer": "2+3 = <<2+3=5>>5\n#### 5"}
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        good,
        "{not json",
        {"question": "No answer field?"},
        {"question": "  ", "answer": "#### 1"},
        {"question": "Where is the marker?", "answer": "It is 4."},
        {"question": "Words?", "answer": "#### four"},
        ["a", "list"],
        "",
        {"question": "What is 1,000+200?", "answer": "#### 1,200"},
    ])
    report = SkipReport()
    ds = load_gsm8k(str(path), report=report)
    assert ds["answer"] == ["5", "1200"] and ds["source"] == ["mixed.jsonl:1", "mixed.jsonl:9"]
    assert report.counts() == {"bad json": 1, "missing field": 2, "no final answer": 1,
                               "final answer not a number": 1, "not an object": 1}
    assert [s["row"] for s in report.skipped] == [2, 3, 4, 5, 6, 7]
    assert report.summary() == ("kept 2 rows, skipped 6 (1 bad json, 1 final answer not a number, "
                                "2 missing field, 1 no final answer, 1 not an object)")


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("\n  \n", "the file is empty"),
    ("question,answer\nWhat is 1+1?,#### 2\n", "not JSONL"),
    ('{"question": "q", "answer": "no marker"}\n', "no usable rows"),
])
def test_unusable_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        load_gsm8k(str(path))
    assert str(info.value).startswith("bad.jsonl") and "\n" not in str(info.value)


def test_gbk_file_is_decoded_and_undecodable_one_raises_data_error(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(json.dumps({"question": "小明有几个苹果？", "answer": "#### 3"}, ensure_ascii=False).encode("gbk"))
    assert load_gsm8k(str(path))["prompt"][0][-1]["content"] == "小明有几个苹果？"
    japanese = json.dumps({"question": "りんごはいくつ？", "answer": "#### 3"}, ensure_ascii=False)
    path.write_bytes(japanese.encode("shift_jis"))
    with pytest.raises(DataError, match=r"gbk\.jsonl: could not detect the encoding"):
        load_gsm8k(str(path))


def test_missing_file_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    with pytest.raises(LabPathError, match="LAB_DATA_DIR"):
        load_gsm8k("gsm8k", split_file="train.jsonl")


def test_folder_with_split_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    (tmp_path / "mine").mkdir()
    write_jsonl(tmp_path / "mine" / "dev.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
    assert load_gsm8k("mine", split_file="dev.jsonl")["answer"] == ["2"]


# ---------------------------------------------------------------- prompt-length filter

def test_prompt_length_filter_with_the_embedded_tokenizer(tokenizer):
    full = load_gsm8k("gsm8k_sample.jsonl")
    lengths = [prompt_token_count(tokenizer, p) for p in full["prompt"]]
    limit = sorted(lengths)[len(lengths) // 2]  # the median: about half the prompts are too long
    too_long = [s for s, n in zip(full["source"], lengths) if n > limit]
    assert 0 < len(too_long) < len(full)

    report = SkipReport()
    kept = load_gsm8k("gsm8k_sample.jsonl", tokenizer=tokenizer, max_prompt_length=limit, report=report)
    assert len(kept) + len(too_long) == len(full)
    assert [s["source"] for s in report.skipped] == too_long
    assert {s["reason"] for s in report.skipped} == {"prompt too long"}
    assert all(prompt_token_count(tokenizer, p) <= limit for p in kept["prompt"])
    # the count is the chat-templated prompt, system message and generation header included
    bare = len(tokenizer(full["prompt"][0][1]["content"], add_special_tokens=False)["input_ids"])
    assert lengths[0] > bare + 20


def test_prompt_length_filter_needs_a_tokenizer():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_gsm8k("gsm8k_sample.jsonl", max_prompt_length=100)


# ---------------------------------------------------------------- the contract with TRL
