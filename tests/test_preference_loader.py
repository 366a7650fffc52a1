"""Preference pairs in three layouts -> one schema; bad rows reported, bad files one clear line."""

import json

import pytest

from data_loaders.common import DataError
from data_loaders.preference import load_preference_file


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_bundled_sample_is_zh_and_en_and_complete():
    pairs, report = load_preference_file("preference_sample.jsonl")
    assert len(pairs) == 200 and report.skipped == []
    prompts = " ".join(p[-1]["content"] for p in pairs["prompt"])
    assert "capital" in prompts and any("\u4e00" <= ch <= "\u9fff" for ch in prompts)
    row = pairs[0]
    assert row["prompt"][-1]["role"] == "user" and row["source"] == "preference_sample.jsonl:1"
    assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    assert set(pairs.column_names) == {"prompt", "chosen", "rejected", "source"}


def test_ultrafeedback_and_sharegpt_layouts_give_the_same_pairs():
    ultrafeedback, _ = load_preference_file("preference_ultrafeedback.jsonl")
    sharegpt, _ = load_preference_file("preference_sharegpt.json")
    assert len(ultrafeedback) == len(sharegpt) == 6
    assert sharegpt[0]["prompt"][0] == {"role": "system", "content": "Answer briefly."}
    sharegpt_prompts = [[m for m in p if m["role"] != "system"] for p in sharegpt["prompt"]]
    assert ultrafeedback["prompt"] == sharegpt_prompts
    assert ultrafeedback["chosen"] == sharegpt["chosen"] and ultrafeedback["rejected"] == sharegpt["rejected"]


def test_text_message_and_list_answers_are_one_schema(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": {"role": "assistant", "content": "4"},
         "rejected": [{"role": "assistant", "content": "5"}]},
    ])
    pairs, _ = load_preference_file(str(path), system_prompt="Be brief.")
    assert pairs[0]["prompt"] == pairs[1]["prompt"] == [{"role": "system", "content": "Be brief."},
                                                        {"role": "user", "content": "2+2?"}]
    assert pairs[0]["chosen"] == pairs[1]["chosen"] == [{"role": "assistant", "content": "4"}]


def test_unusable_rows_are_reported_with_their_reason(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "same", "chosen": "a", "rejected": "a"},
        {"prompt": "no rejected", "chosen": "a"},
        {"prompt": "empty", "chosen": "  ", "rejected": "b"},
        {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
         "rejected": [{"role": "user", "content": "other q"}, {"role": "assistant", "content": "b"}]},
        {"conversations": [{"from": "alien", "value": "q"}], "chosen": "a", "rejected": "b"},
        {"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"},
        {"question": "q", "chosen": "a", "rejected": "b"},
        ["not", "an", "object"],
    ])
    pairs, report = load_preference_file(str(path))
    assert len(pairs) == 1 and report.kept == 1
    assert [s["row"] for s in report.skipped] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert report.counts() == {"identical answers": 1, "missing answer": 1, "empty answer": 1, "prompts differ": 1,
                               "unknown role": 1, "prompt does not end with a user turn": 1, "missing prompt": 1,
                               "not an object": 1}


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": oops}\n', "p.jsonl, row 2: not valid JSON lines"),
    (b'[{"prompt": "a", ', "p.jsonl, row line 1: not valid JSON"),
    (bytes(range(256)) * 4, "p.jsonl"),  # binary: no text encoding fits
    (b'{"prompt": "a", "chosen": "b", "rejected": "b"}\n', "no usable preference pairs"),
])
def test_bad_files_are_one_clear_line(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_preference_file(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("encoding", ["gbk", "utf-16", "big5"])
def test_legacy_encodings_are_read_by_the_shared_decoder(tmp_path, encoding):
    path = tmp_path / "legacy.jsonl"
    path.write_bytes('{"prompt": "你好，今天天氣怎麼樣？", "chosen": "很好。", "rejected": "不知道。"}\n'.encode(encoding))
    pairs, _ = load_preference_file(str(path))
    assert pairs[0]["prompt"][-1]["content"] == "你好，今天天氣怎麼樣？" and pairs[0]["chosen"][0]["content"] == "很好。"


def test_utf8_with_bom_is_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes('{"prompt": "你好", "chosen": "好", "rejected": "坏"}\n'.encode("utf-8-sig"))
    pairs, _ = load_preference_file(str(path))
    assert pairs[0]["prompt"][-1]["content"] == "你好"
