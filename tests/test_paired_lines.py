"""The paired-lines layout (question line, answer line, blank line) of Chinese medical corpora, and its detection."""

import os
from pathlib import Path

import pytest

from data_loaders.common import DataError
from data_loaders.medical_csv import choose_layout, load_medical_csv
from data_loaders.paired_lines import block_turns, looks_like_paired_lines, split_blocks, UnpairedBlock
from lab_utils.core.paths import REPO_ROOT

SAMPLE = "medical/dialogues_paired_gbk.txt"
CSV_SAMPLES = ["dialogues_utf8.csv", "dialogues_utf8_bom.csv", "dialogues_utf16.csv", "dialogues_gbk.csv",
               "dialogues_gb18030.csv", "dialogues_big5.csv", "dialogues_utf8.tsv"]
SHARED = Path(os.environ.get("LAB_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
REAL_CSV = SHARED / "chinese-medical-dialogue" / "样例_内科5000-6000.csv"


def write(path: Path, text: str, codec: str = "gbk") -> Path:
    path.write_bytes(text.encode(codec))
    return path


def test_bundled_gbk_sample_is_detected_and_read_whole():
    result = load_medical_csv(SAMPLE, system_prompt=None)
    got = (result.layout, result.encoding, result.rows_read, len(result.dataset))
    assert got == ("paired_lines", "gb18030", 12, 12)
    assert result.report.skipped == [] and "paired lines, 12 question/answer blocks" in result.summary()
    raw = (REPO_ROOT / "data" / "samples" / SAMPLE).read_bytes().decode("gbk").split("\r\n")
    first = result.dataset[0]
    assert first["messages"] == [{"role": "user", "content": raw[0]}, {"role": "assistant", "content": raw[1]}]
    assert first["source"] == "dialogues_paired_gbk.txt:1"
    assert result.dataset[1]["source"] == "dialogues_paired_gbk.txt:4"
    assert set(result.dataset["department"]) == {""}


def test_the_sample_as_csv_is_what_a_new_user_used_to_get():
    """Forcing CSV shows why detection matters: the text's quote and comma break the CSV reader."""
    with pytest.raises(DataError,
                       match=r"dialogues_paired_gbk\.txt.*(malformed CSV|missing required column).*paired_lines"):
        load_medical_csv(SAMPLE, layout="csv")


@pytest.mark.parametrize("name", CSV_SAMPLES)
def test_every_csv_sample_is_still_read_as_csv(name):
    assert load_medical_csv(f"medical/{name}").layout == "csv"


@pytest.mark.skipif(not REAL_CSV.exists(), reason="shared data folder not present")
def test_the_real_gbk_csv_is_not_mistaken_for_paired_lines():
    text = REAL_CSV.read_bytes().decode("gb18030")
    assert choose_layout(text, "auto", ",", None, REAL_CSV) == "csv"
    assert not looks_like_paired_lines(text)  # one block: no blank lines between CSV rows


def test_csv_with_unknown_headers_stays_csv_and_says_how_to_read_paired_lines(tmp_path):
    path = write(tmp_path / "d.csv", "id,text,label\n1,头疼,x\n2,发烧,y\n", "utf-8")
    with pytest.raises(DataError, match=r"^d\.csv: missing required column 'ask'.*format paired_lines"):
        load_medical_csv(path)


def test_csv_with_quoted_blank_lines_is_read_as_csv(tmp_path):
    text = ('ask,answer\r\n"头疼怎么办","多休息。\r\n\r\n持续请就医。"\r\n'
            '"发烧怎么办","多喝水。\r\n\r\n高烧请就医。"\r\n')
    result = load_medical_csv(write(tmp_path / "q.csv", text), system_prompt=None, min_len=1)
    assert result.layout == "csv" and result.dataset[0]["messages"][1]["content"] == "多休息。\n\n持续请就医。"


def test_speaker_labels_multi_line_answers_and_multi_turn_blocks(tmp_path):
    text = ("问：我咳嗽一周了，需要吃药吗？\n答：多喝温水，注意休息。\n如果发烧或气短，请就医。\n\n"
            "患者：孩子晚上磨牙是缺钙吗？\n医生：磨牙和缺钙关系不大，多与紧张有关。\n患者：需要看医生吗？\n医生：牙齿磨损明显时看口腔科。\n\n"
            "肚子疼\n先观察，疼得厉害就去医院。\n拉肚子呢\n注意补水。\n")
    result = load_medical_csv(write(tmp_path / "labels.txt", text, "utf-8"), system_prompt=None, min_len=1)
    assert result.layout == "paired_lines" and result.report.skipped == []
    assert result.dataset[0]["messages"] == [
        {"role": "user", "content": "我咳嗽一周了，需要吃药吗？"},
        {"role": "assistant", "content": "多喝温水，注意休息。\n如果发烧或气短，请就医。"}]
    assert [m["role"] for m in result.dataset[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert result.dataset[2]["messages"][2] == {"role": "user", "content": "拉肚子呢"}
    assert result.dataset["source"] == ["labels.txt:1", "labels.txt:5", "labels.txt:10"]


def test_unpairable_blocks_empty_and_duplicates_are_reported_not_guessed(tmp_path):
    text = ("头疼怎么办？\n多休息，多喝水。\n\n"
            "这一段只有一行，没有回答。\n\n"
            "答：先有回答\n问：后有问题\n\n"
            "头疼怎么办？\n多休息，多喝水。\n\n"
            "发烧怎么办？\n多喝水，高烧请就医。\n\n"
            "问：\n答：空问题\n")
    # 4 of 6 pair: auto says CSV
    result = load_medical_csv(write(tmp_path / "mixed.txt", text), min_len=1, layout="paired_lines")
    assert result.rows_read == 6 and len(result.dataset) == 2
    assert result.report.counts() == {"unpaired_lines": 2, "duplicate": 1, "empty": 1}
    skipped = {s["row"]: s["reason"] for s in result.report.skipped}
    assert skipped == {4: "unpaired_lines", 6: "unpaired_lines", 9: "duplicate", 15: "empty"}


def test_format_paired_lines_forces_it_and_an_unknown_format_is_one_line(tmp_path):
    path = write(tmp_path / "one.txt", "头疼怎么办？\n多休息，多喝水。\n")  # one block: auto cannot tell
    assert load_medical_csv(path, layout="paired_lines", min_len=1).layout == "paired_lines"
    with pytest.raises(DataError,
                       match=r"^one\.txt: format 'tsv' is unknown; expected one of auto, csv, paired_lines$"):
        load_medical_csv(path, layout="tsv")


def test_detection_needs_most_blocks_to_pair():
    assert looks_like_paired_lines("问\n答\n\n问\n答\n\n问\n答\n")
    assert not looks_like_paired_lines("a\nb\nc\n\nd\ne\nf\n\ng\n")  # odd blocks: not pairs
    assert not looks_like_paired_lines("问\n答\n问\n答\n")  # one block: no blank-line structure
    assert split_blocks("\ufeffa\nb\n \n\nc\n") == [(1, ["a", "b"]), (5, ["c"])]
    with pytest.raises(UnpairedBlock, match="3 lines"):
        block_turns(["a", "b", "c"])
    assert block_turns(["Q: why?", "A: because.", "more"]) == [("user", "why?"), ("assistant", "because.\nmore")]


def test_medical_experiment_reads_paired_lines_through_its_format_parameter():
    from scripts import sft_medical

    data = sft_medical.load_data(sft_medical.Params(data_file=SAMPLE, format="auto"))
    assert data.csv.layout == "paired_lines" and sft_medical.encoding_report(data.csv)["format"] == "paired_lines"
    with pytest.raises(DataError, match="malformed CSV|missing required column"):
        sft_medical.load_data(sft_medical.Params(data_file=SAMPLE, format="csv"))
