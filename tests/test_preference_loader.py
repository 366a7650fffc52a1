"""Preference pairs in three layouts -> one schema; bad rows reported, bad files one clear line."""


import pytest

from data_loaders.common import DataError
from data_loaders.preference import load_preference_file, unpair
from tests.helpers import write_jsonl


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
    path.write_bytes(
        '{"prompt": "你好，今天天氣怎麼樣？", "chosen": "很好。", "rejected": "不知道。"}\n'.encode(encoding)
    )
    pairs, _ = load_preference_file(str(path))
    assert (
        pairs[0]["prompt"][-1]["content"] == "你好，今天天氣怎麼樣？" and pairs[0]["chosen"][0]["content"] == "很好。"
    )


def test_utf8_with_bom_is_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes('{"prompt": "你好", "chosen": "好", "rejected": "坏"}\n'.encode("utf-8-sig"))
    pairs, _ = load_preference_file(str(path))
    assert pairs[0]["prompt"][-1]["content"] == "你好"


def test_bundled_unpaired_sample_is_kto_layout_zh_and_en_balanced():
    rows, report = load_preference_file("preference_unpaired.jsonl")
    assert len(rows) == 96 and report.skipped == [] and sum(rows["label"]) == 48
    assert set(rows.column_names) == {"prompt", "completion", "label", "source"}
    assert rows[0]["completion"][0]["role"] == "assistant" and isinstance(rows[0]["label"], bool)
    prompts = " ".join(p[-1]["content"] for p in rows["prompt"])
    assert "capital" in prompts and any("\u4e00" <= ch <= "\u9fff" for ch in prompts)


def test_unpaired_rows_with_bad_labels_or_the_other_layout_are_reported(tmp_path):
    path = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"prompt": "a?", "completion": "b.", "label": True},
            {"prompt": "c?", "completion": "d.", "label": "yes"},
            {"prompt": "e?", "chosen": "f.", "rejected": "g."},
            {"prompt": "h?", "completion": "", "label": False},
        ],
    )
    rows, report = load_preference_file(str(path))
    assert len(rows) == 1 and [s["reason"] for s in report.skipped] == [
        "label is not a boolean",
        "not an unpaired row",
        "empty answer",
    ]
    mixed = write_jsonl(
        tmp_path / "mixed.jsonl",
        [{"prompt": "a?", "chosen": "b.", "rejected": "c."}, {"prompt": "d?", "completion": "e.", "label": True}],
    )
    pairs, report = load_preference_file(str(mixed))
    assert len(pairs) == 1 and report.skipped[0]["reason"] == "unpaired row in a file of pairs"


def test_unpair_makes_each_pair_a_desirable_and_an_undesirable_row():
    pairs, _ = load_preference_file("preference_ultrafeedback.jsonl")
    rows = unpair(pairs)
    assert len(rows) == 2 * len(pairs) and rows["label"][:2] == [True, False]
    assert rows[0]["completion"] == pairs[0]["chosen"] and rows[1]["completion"] == pairs[0]["rejected"]
    assert rows[0]["prompt"] == rows[1]["prompt"] == pairs[0]["prompt"] and rows[1]["source"] == pairs[0]["source"]
