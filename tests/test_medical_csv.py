"""The medical CSV loader on real bytes: every encoding, CSV quirks, cleaning counts, bad input, the real GBK file."""

import csv
import io
import os
from pathlib import Path

import pandas as pd
import pytest

from data_loaders.common import DataError
from data_loaders.medical_csv import (
    DEFAULT_SYSTEM_PROMPT, load_medical_csv, plausibility, split_dataset,
)
from lab_utils.core.paths import REPO_ROOT, LabPathError

SAMPLES = REPO_ROOT / "data" / "samples" / "medical"
REAL_FILE = "chinese-medical-dialogue/样例_内科5000-6000.csv"
HEADER = ["department", "title", "ask", "answer"]
ROWS = [
    ["内科", "发烧怎么办", "昨天开始发烧三十八度，嗓子疼。",
     "多喝水、多休息，体温超过三十八度五可以用退烧药，高烧不退请就医。"],
    ["心血管科", "血压高", "血压一百五，头有点晕，要吃药吗？",
     "请连续几天测量血压，如果一直偏高，到心内科让医生决定是否用药。"],
    ["消化内科", "胃不舒服", "饭后胃疼还反酸。", "少吃辛辣油腻，规律饮食，症状持续请做胃镜检查。"],
]
TRADITIONAL_ROWS = [
    ["內科", "感冒咳嗽", "感冒一個星期了，還是一直咳嗽。", "多喝溫水、充分休息，若咳嗽超過三週請到醫院檢查。"],
    ["皮膚科", "全身發癢", "最近皮膚很癢。", "洗澡水不要太熱，洗完擦上保濕乳液，若一直不好請就醫。"],
]


def write_csv(path: Path, rows, encoding="utf-8", header=HEADER, delimiter=",", newline="\r\n") -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def conversations(result):
    return [(m[-2]["content"], m[-1]["content"]) for m in result.dataset["messages"]]


def expected(rows):
    return [(f"{title}\n{ask}", answer) for _, title, ask, answer in rows]


# ---------------------------------------------------------------- encodings

@pytest.mark.parametrize("encoding, detected", [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"),
    ("gbk", "gb18030"), ("gb18030", "gb18030"),
])
def test_each_encoding_round_trips(tmp_path, encoding, detected):
    result = load_medical_csv(write_csv(tmp_path / "d.csv", ROWS, encoding))
    assert result.encoding == detected
    assert conversations(result) == expected(ROWS)
    assert result.dataset["department"] == [r[0] for r in ROWS]
    assert result.dataset["source"] == ["d.csv:2", "d.csv:3", "d.csv:4"]
    assert result.dataset[0]["messages"][0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def test_big5_traditional_round_trips_and_is_not_read_as_gb18030(tmp_path):
    result = load_medical_csv(write_csv(tmp_path / "d.csv", TRADITIONAL_ROWS, "big5"))
    assert result.encoding == "big5"
    assert conversations(result) == expected(TRADITIONAL_ROWS)
    # GB18030 decodes these bytes too, as nonsense; the plausibility score is what rejects it
    assert isinstance(result.encoding_scores["gb18030"], float) and result.encoding_scores["gb18030"] < 0.6


def test_bom_is_consumed_not_left_in_the_first_header(tmp_path):
    result = load_medical_csv(write_csv(tmp_path / "d.csv", ROWS, "utf-8-sig"))
    assert result.columns["department"] == "department"
    assert "\ufeff" not in "".join(m["content"] for ms in result.dataset["messages"] for m in ms)


def test_explicit_encoding_overrides_and_wrong_one_names_the_offset(tmp_path):
    path = write_csv(tmp_path / "d.csv", ROWS, "gbk")
    assert load_medical_csv(path, encoding="gbk").encoding == "gbk"
    with pytest.raises(DataError, match=r"d\.csv: not valid utf-8: invalid byte 0x[0-9A-F]{2} at byte offset \d+"):
        load_medical_csv(path, encoding="utf-8")


def test_utf16_without_bom_needs_an_explicit_encoding(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(write_csv(tmp_path / "src.csv", ROWS).read_text(encoding="utf-8").encode("utf-16-le"))
    with pytest.raises(DataError, match="holds NUL bytes.*encoding='utf-16-le'"):
        load_medical_csv(path)
    assert conversations(load_medical_csv(path, encoding="utf-16-le")) == expected(ROWS)


def test_malformed_quoting_names_the_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('department,title,ask,answer\n内科,头疼,"头疼"怎么办,多休息\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.csv, row 2: malformed CSV near line 2"):
        load_medical_csv(path)


def test_plausibility_separates_text_from_mojibake():
    simplified = "".join("".join(r) for r in ROWS)
    traditional = "".join("".join(r) for r in TRADITIONAL_ROWS)
    assert plausibility(simplified) > 0.9 and plausibility(traditional) > 0.9
    assert plausibility(traditional.encode("big5").decode("gb18030")) < 0.6
    assert plausibility("plain ascii, department,title") == 1.0


@pytest.mark.parametrize("name, encoding, rows", [
    ("dialogues_utf8.csv", "utf-8", 30), ("dialogues_utf8_bom.csv", "utf-8-sig", 30),
    ("dialogues_utf16.csv", "utf-16", 30), ("dialogues_gbk.csv", "gb18030", 30),
    ("dialogues_gb18030.csv", "gb18030", 31), ("dialogues_big5.csv", "big5", 8),
    ("dialogues_utf8.tsv", "utf-8", 30),
])
def test_bundled_samples(name, encoding, rows):
    result = load_medical_csv(f"medical/{name}")
    assert (result.encoding, len(result.dataset), result.report.counts()) == (encoding, rows, {})
    assert result.delimiter == ("\t" if name.endswith(".tsv") else ",")
    if encoding != "big5":  # the Big5 sample holds its own traditional-Chinese rows
        reference = load_medical_csv("medical/dialogues_utf8.csv").dataset["messages"]
        assert result.dataset["messages"][:30] == reference


# ---------------------------------------------------------------- CSV structure and columns

def test_tab_separated_mixed_line_endings_and_quoted_newlines(tmp_path):
    rows = [r[:] for r in ROWS]
    rows[0][3] = "第一行，带逗号\n第二行"  # a quoted field with the delimiter of the CSV variant and a newline
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows([HEADER] + rows)
    lines = buffer.getvalue().split("\n")  # the quoted newline splits row 2 across two "lines"
    text = lines[0] + "\r\n" + lines[1] + "\n" + lines[2] + "\r" + lines[3] + "\r\n" + lines[4] + "\n"
    path = tmp_path / "d.tsv"
    path.write_bytes(text.encode("utf-8"))
    result = load_medical_csv(path)
    assert result.delimiter == "\t"
    assert conversations(result) == expected(rows)
    assert result.dataset["source"] == ["d.tsv:2", "d.tsv:3", "d.tsv:4"]


def test_chinese_headers_with_odd_case_and_spaces(tmp_path):
    path = write_csv(tmp_path / "d.csv", ROWS, header=[" 科室 ", "标题", "问 题", "回复"])
    result = load_medical_csv(path)
    assert result.columns == {"department": " 科室 ".strip(), "title": "标题", "ask": "问 题", "answer": "回复"}
    assert conversations(result) == expected(ROWS)
    english = load_medical_csv(write_csv(tmp_path / "e.csv", ROWS, header=["Dept", "TITLE", "Question", "Response"]))
    assert conversations(english) == expected(ROWS)


def test_explicit_column_mapping(tmp_path):
    path = write_csv(tmp_path / "d.csv", ROWS, header=["k", "t", "patient_text", "doctor_text"])
    result = load_medical_csv(path, columns={"ask": "patient_text", "answer": "doctor_text", "title": "t"})
    assert conversations(result) == expected(ROWS)
    assert result.dataset["department"] == ["", "", ""]


def test_question_leaves_out_a_title_already_in_the_ask(tmp_path):
    rows = [["内科", "发烧怎么办？", "发烧怎么办，昨天开始三十八度。", "多喝水，多休息，高烧不退请就医。"],
            ["内科", "", "嗓子疼怎么办？", "多喝温水，疼得厉害请到医院看看。"]]
    result = load_medical_csv(write_csv(tmp_path / "d.csv", rows))
    assert [q for q, _ in conversations(result)] == ["发烧怎么办，昨天开始三十八度。", "嗓子疼怎么办？"]


def test_no_system_prompt(tmp_path):
    result = load_medical_csv(write_csv(tmp_path / "d.csv", ROWS), system_prompt=None)
    assert [m["role"] for m in result.dataset[0]["messages"]] == ["user", "assistant"]


# ---------------------------------------------------------------- cleaning and the skip report

def test_cleaning_and_skip_report_counts(tmp_path):
    rows = [r[:] for r in ROWS]
    rows[0][2] = "  \x07昨天开始发烧\u3000３８度，\u200b嗓子疼。 "  # control char, ideographic space, full-width digits
    rows += [
        ["内科", "", "   ", "有回答没问题"],            # empty question
        ["内科", "头疼", "头疼怎么办？", "\t "],          # empty answer
        ROWS[1][:],                                      # duplicate of row 3
        ["内科", "", "疼", "休息"],                      # 3 characters: too short
        ["内科", "", "长", "很" * 300],                   # 301 characters: too long
    ]
    path = write_csv(tmp_path / "d.csv", rows)
    with path.open("ab") as f:
        f.write(b"\r\n")  # a blank line at the end
    result = load_medical_csv(path, min_len=8, max_len=300)
    assert result.dataset[0]["messages"][1]["content"] == "发烧怎么办\n昨天开始发烧 38度，嗓子疼。"
    assert result.report.counts() == {"empty": 2, "duplicate": 1, "too_short": 1, "too_long": 1, "blank_line": 1}
    assert result.report.kept == len(result.dataset) == 3
    assert result.rows_read == 9
    duplicate = [s for s in result.report.skipped if s["reason"] == "duplicate"][0]
    assert (duplicate["source"], duplicate["detail"]) == ("d.csv:7", "same conversation as row 3")
    written = pd.read_csv(result.report.write_csv(tmp_path / "run" / "skipped.csv"))
    assert len(written) == 6 and set(written.columns) == {"source", "row", "reason", "detail"}


def test_length_window_counts_tokens_when_given_a_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from lab_utils.models.registry import resolve_model
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    rows = [["内科", "", "头疼怎么办", "多休息"]]  # 8 characters, but SmolLM2 spends several tokens per hanzi
    path = write_csv(tmp_path / "d.csv", rows + [ROWS[0]])
    assert load_medical_csv(path, min_len=1, max_len=12).report.counts() == {"too_long": 1}  # ROWS[0] in characters
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ("头疼怎么办", "多休息"))
    assert n_tokens > 12
    by_tokens = load_medical_csv(path, min_len=1, max_len=n_tokens, tokenizer=tokenizer)
    assert by_tokens.report.counts() == {"too_long": 1} and by_tokens.dataset["source"] == ["d.csv:2"]


def test_extra_fields_are_reported(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("department,title,ask,answer\n内科,头疼,头疼怎么办,多休息,多喝水\n" + ",".join(ROWS[0]) + "\n",
                    encoding="utf-8")
    result = load_medical_csv(path)
    assert result.report.counts() == {"wrong_field_count": 1} and len(result.dataset) == 1


# ---------------------------------------------------------------- split

def test_split_is_deterministic_per_seed():
    dataset = load_medical_csv("medical/dialogues_utf8.csv").dataset
    first, again, other = (split_dataset(dataset, seed=s, validation=0.1, test=0.1) for s in (1, 1, 2))
    assert [len(first[k]) for k in ("train", "validation", "test")] == [24, 3, 3]
    sources = {k: list(first[k]["source"]) for k in first}
    assert all(sources[k] == list(again[k]["source"]) for k in first)
    assert sources["test"] != list(other["test"]["source"])
    everything = sources["train"] + sources["validation"] + sources["test"]
    assert sorted(everything) == sorted(dataset["source"])


# ---------------------------------------------------------------- bad input: one clear line naming the file

@pytest.mark.parametrize("name, content, message", [
    ("image.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "this is a PNG image, not a CSV"),
    ("data.zip", b"PK\x03\x04" + bytes(100), "this is a zip archive"),
    ("empty.csv", b"", "the file is empty"),
    ("blank.csv", b" \r\n\r\n", "the file is empty"),
    ("header.csv", "科室,标题,问题,回答\r\n".encode("gbk"), "has a header row"),
    ("sjis.csv", ("department,title,ask,answer\r\n" + "内科,頭痛,頭が痛いです。どうすればいいですか？,"
                  "ゆっくり休んでください。ひどい場合は病院へ。\r\n" * 3).encode("shift_jis"),
     "could not detect the encoding"),
    ("random.csv", bytes((i * 7919 + 13) % 251 + 1 for i in range(3000)), "could not detect the encoding"),
    ("cols.csv", "id,text,label\n1,头疼,x\n".encode("utf-8"), "missing required column 'ask'"),
    ("nul.csv", b"department,ask\x00,answer\n", "holds NUL bytes"),
])
def test_bad_input_is_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_medical_csv(path)
    text = str(error.value)
    assert text.startswith(name) and message in text and "\n" not in text


def test_undecodable_file_names_the_closest_candidate_and_offset(tmp_path):
    path = tmp_path / "sjis.csv"
    path.write_bytes("department,title,ask,answer\r\n内科,頭痛,頭が痛いです,休んでください\r\n".encode("shift_jis"))
    with pytest.raises(DataError,
                       match=r"closest candidate \S+ fails with invalid byte 0x[0-9A-F]{2} at byte offset \d+"):
        load_medical_csv(path)


def test_no_usable_rows_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"d\.csv: no usable rows: kept 0 rows, skipped 2 \(2 empty\)"):
        load_medical_csv(write_csv(tmp_path / "d.csv", [["内科", "", "", "回答"], ["内科", "问", "问题", ""]]))


def test_missing_columns_lists_the_headers_found(tmp_path):
    with pytest.raises(DataError, match=r"headers found: \['id', 'text', 'label'\]"):
        load_medical_csv(write_csv(tmp_path / "d.csv", [["1", "2", "3"]], header=["id", "text", "label"]))
    with pytest.raises(DataError, match="not a header"):
        load_medical_csv(write_csv(tmp_path / "e.csv", ROWS), columns={"ask": "nope"})


def test_missing_file_names_lab_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    with pytest.raises(LabPathError, match="LAB_DATA_DIR"):
        load_medical_csv("no-such-folder/dialogues.csv")


# ---------------------------------------------------------------- the real GBK file

def shared_data() -> Path:
    return Path(os.environ.get("LAB_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


@pytest.mark.skipif(not (shared_data() / REAL_FILE).exists(), reason="shared data folder not present")
def test_real_gbk_file_loads_every_row(monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(shared_data()))
    # independent count: pandas with the encoding we know the file has
    frame = pd.read_csv(shared_data() / REAL_FILE, encoding="gb18030", keep_default_na=False)
    duplicates = int(frame.duplicated(["title", "ask", "answer"]).sum())
    # its conversations are 63..753 characters: the default window [8, 2048] keeps all
    result = load_medical_csv(REAL_FILE)
    assert result.encoding == "gb18030"
    assert result.rows_read == len(frame) == 7644
    assert result.report.counts() == {"duplicate": duplicates}
    assert len(result.dataset) == len(frame) - duplicates == 7266
    text = "".join(m["content"] for ms in result.dataset["messages"] for m in ms)
    assert "\ufffd" not in text
    assert set(result.dataset["department"]) == set(frame["department"])
    first = result.dataset[0]["messages"]
    assert first[1]["content"] == frame.title[0] + "\n" + frame.ask[0] and first[2]["content"] == frame.answer[0]
