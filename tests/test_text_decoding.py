"""The one shared decoder, through every text loader: the same bytes decode the same way everywhere."""

import json

import pytest

from lab_utils.core import text_decoding
from data_loaders.alpaca import load_chat_file
from data_loaders.common import DataError
from data_loaders.gsm8k import load_gsm8k
from data_loaders.medical_csv import load_medical_csv
from lab_utils.core.text_decoding import decode_file, plausibility, read_text

SIMPLIFIED = [{"instruction": "用一句话解释什么是光合作用。", "input": "",
               "output": "植物利用阳光把水和二氧化碳变成糖和氧气。"},
              {"instruction": "把下面的句子翻译成英文。", "input": "我喜欢喝茶。", "output": "I like drinking tea."}]
TRADITIONAL = [{"instruction": "請用一句話解釋什麼是颱風。", "input": "",
                "output": "颱風是在熱帶海面上形成的強烈氣旋。"}]
# (python codec that writes the file, what read_text reports)
ENCODINGS = [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"), ("gbk", "gb18030"),
             ("gb18030", "gb18030")]


def jsonl(rows) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


@pytest.mark.parametrize("codec, reported", ENCODINGS + [("big5", "big5")])
def test_read_text_detects_every_supported_encoding(tmp_path, codec, reported):
    text = jsonl(TRADITIONAL if codec == "big5" else SIMPLIFIED)
    path = tmp_path / "rows.jsonl"
    path.write_bytes(text.encode(codec))
    decoded, encoding = read_text(path)
    assert (decoded.lstrip("\ufeff"), encoding) == (text, reported)


@pytest.mark.parametrize("codec, reported", ENCODINGS)
def test_alpaca_jsonl_in_every_encoding_gives_the_same_rows(tmp_path, codec, reported):
    reference, _ = load_chat_file(str(_write(tmp_path / "utf8.jsonl", jsonl(SIMPLIFIED), "utf-8")))
    dataset, report = load_chat_file(str(_write(tmp_path / "d.jsonl", jsonl(SIMPLIFIED), codec)))
    assert dataset["messages"] == reference["messages"] and report.skipped == []


def test_sharegpt_json_list_in_big5_and_messages_in_gbk(tmp_path):
    sharegpt = [{"conversations": [{"from": "human", "value": TRADITIONAL[0]["instruction"]},
                                   {"from": "gpt", "value": TRADITIONAL[0]["output"]}]}]
    dataset, _ = load_chat_file(str(_write(tmp_path / "s.json", json.dumps(sharegpt, ensure_ascii=False), "big5")))
    assert dataset[0]["messages"][1]["content"] == "颱風是在熱帶海面上形成的強烈氣旋。"
    messages = [{"messages": [{"role": "user", "content": "头疼怎么办？"},
                              {"role": "assistant", "content": "多休息，多喝水。"}]}]
    dataset, _ = load_chat_file(str(_write(tmp_path / "m.jsonl", jsonl(messages), "gbk")))
    assert dataset[0]["messages"][0]["content"] == "头疼怎么办？"


def test_explicit_encoding_is_strict_and_wrong_one_is_one_line(tmp_path):
    path = _write(tmp_path / "d.jsonl", jsonl(SIMPLIFIED), "gbk")
    assert load_chat_file(str(path), encoding="gbk")[0][0]["messages"][0]["content"] == SIMPLIFIED[0]["instruction"]
    with pytest.raises(DataError, match=r"^d\.jsonl: not valid utf-8: invalid byte 0x[0-9A-F]{2} at byte offset \d+"):
        load_chat_file(str(path), encoding="utf-8")


@pytest.mark.parametrize("loader, name", [
    (lambda p: load_chat_file(str(p)), "a.jsonl"),
    (lambda p: load_gsm8k(str(p)), "g.jsonl"),
    (lambda p: load_medical_csv(p), "m.csv"),
])
def test_every_loader_gives_the_same_one_line_error_when_no_encoding_fits(tmp_path, loader, name):
    path = tmp_path / name
    path.write_bytes("department,title,ask,answer\r\n内科,頭痛,頭が痛いです,休んでください\r\n".encode("shift_jis"))
    with pytest.raises(DataError) as error:
        loader(path)
    message = str(error.value)
    assert message.startswith(f"{name}: could not detect the encoding (tried utf-8, utf-8-sig, utf-16, gb18030, big5)")
    assert "\n" not in message and "pass encoding=" in message


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "this is a PNG image, not"),
    (b"PK\x03\x04" + bytes(64), "this is a zip archive"),
    (b"  \n", "the file is empty"),
    (b'{"a": 1}\x00\n', "holds NUL bytes"),
])
def test_not_text_is_one_line(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^x\\.jsonl: {message}"):
        read_text(path)


def test_scores_say_why_big5_beat_gb18030(tmp_path):
    path = _write(tmp_path / "t.jsonl", jsonl(TRADITIONAL * 5), "big5")
    _, encoding, scores = decode_file(path)
    assert encoding == "big5" and scores["big5"] > 0.9 > text_decoding.MIN_PLAUSIBILITY
    assert isinstance(scores["utf-8"], str) and "invalid byte" in scores["utf-8"]
    assert plausibility(jsonl(TRADITIONAL).encode("big5").decode("gb18030", errors="replace")) < 0.6


def test_loaders_share_the_decoder_rather_than_copies():
    import data_loaders.alpaca as alpaca
    import data_loaders.gsm8k as gsm8k
    import data_loaders.medical_csv as medical

    assert alpaca.read_text is gsm8k.read_text is text_decoding.read_text
    assert medical.decode_file is text_decoding.decode_file and medical.plausibility is text_decoding.plausibility


def _write(path, text: str, codec: str):
    path.write_bytes(text.encode(codec))
    return path
