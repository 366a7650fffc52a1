
import pytest

from data_loaders.alpaca import load_chat_file
from data_loaders.common import DataError
from tests.helpers import write_jsonl


def test_bundled_alpaca_sample_is_mixed_and_complete():
    dataset, report = load_chat_file("alpaca_sample.jsonl")
    assert len(dataset) == 261 and report.skipped == []
    texts = " ".join(m["content"] for row in dataset["messages"] for m in row)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in texts) and "capital" in texts
    assert all(row[-1]["role"] == "assistant" for row in dataset["messages"])
    assert dataset[0]["source"].startswith("alpaca_sample.jsonl:")


def test_input_empty_null_or_missing(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Say hi", "input": "", "output": "Hi"},
        {"instruction": "Say hi", "input": None, "output": "Hi"},
        {"instruction": "Say hi", "output": "Hi"},
        {"instruction": "Translate", "input": "猫", "output": "cat"},
    ])
    dataset, _ = load_chat_file(str(path))
    users = [row[0]["content"] for row in dataset["messages"]]
    assert users[:3] == ["Say hi"] * 3
    assert users[3] == "Translate\n\n猫"


def test_messages_and_sharegpt_give_the_same_conversations():
    messages, _ = load_chat_file("messages_sample.jsonl")
    sharegpt, _ = load_chat_file("sharegpt_sample.json")
    assert messages["messages"] == sharegpt["messages"]
    assert any(len(row) == 4 for row in messages["messages"])  # multi-turn kept whole


def test_system_prompt_added_only_where_missing():
    dataset, _ = load_chat_file("messages_sample.jsonl", system_prompt="Be brief.")
    firsts = [row[0] for row in dataset["messages"]]
    assert all(m["role"] == "system" for m in firsts)
    assert {"role": "system", "content": "You answer in one short sentence."} in firsts  # the row's own wins
    assert sum(m["content"] == "Be brief." for m in firsts) == len(firsts) - 2


def test_unusable_rows_are_reported_not_dropped_silently(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"instruction": "ok", "output": "fine"},
        {"instruction": "no answer"},
        {"instruction": "", "output": "orphan"},
        {"messages": [{"role": "robot", "content": "beep"}]},
        {"conversations": [{"from": "human", "value": "hi"}]},
        ["not", "an", "object"],
        {"text": "raw text row"},
    ])
    dataset, report = load_chat_file(str(path))
    assert len(dataset) == 1 and report.kept == 1
    assert report.counts() == {"empty output": 1, "empty instruction": 1, "unknown role": 1,
                               "no final assistant turn": 1, "not an object": 1, "unknown format": 1}
    assert [s["row"] for s in report.skipped] == [2, 3, 4, 5, 6, 7]
    written = report.write_csv(tmp_path / "skipped.csv").read_text()
    assert "mixed.jsonl,2,empty output" in written


def test_invalid_json_line_names_file_and_row(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl, row 2: not valid JSON"):
        load_chat_file(str(path))


def test_empty_file_and_no_usable_rows(tmp_path):
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(DataError, match="empty.json: the file is empty"):
        load_chat_file(str(tmp_path / "empty.json"))
    write_jsonl(tmp_path / "useless.jsonl", [{"instruction": "x"}])
    with pytest.raises(DataError, match="no usable rows"):
        load_chat_file(str(tmp_path / "useless.jsonl"))


def test_missing_file_names_the_variable():
    with pytest.raises(FileNotFoundError, match="LAB_DATA_DIR"):
        load_chat_file("does/not/exist.jsonl")


def test_real_gpteacher_roleplay_via_lab_data_dir(real_data_dir, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(real_data_dir))
    dataset, report = load_chat_file("gpteacher-roleplay/roleplay-simple-deduped-roleplay-dataset.json",
                                     system_prompt="Stay in character.")
    assert report.kept + len(report.skipped) == 3146
    assert len(dataset) == report.kept > 3000
    assert dataset[0]["messages"][0] == {"role": "system", "content": "Stay in character."}
