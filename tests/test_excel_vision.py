"""The Excel vision loader on real .xlsx files: path columns, pasted pictures, headers, bad rows."""

from pathlib import Path

import pytest
from openpyxl import Workbook
from openpyxl.drawing.image import Image as SheetImage
from PIL import Image

from data_loaders.common import DataError
from data_loaders.excel_vision import DEFAULT_PROMPT, load_excel_vision
from data_loaders.vision_samples import EMBEDDED_SHEET, PATH_SHEET, SAMPLE_DIR, make_sample_sheets
from tests.helpers import write_sheet


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "lab-data"))


def save_png(path: Path, size=(64, 32), color="white") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_bundled_samples_load_and_match_the_generator(tmp_path):
    path_ds, path_report = load_excel_vision(str(SAMPLE_DIR / PATH_SHEET))
    embedded_ds, embedded_report = load_excel_vision(str(SAMPLE_DIR / EMBEDDED_SHEET))
    rebuilt = make_sample_sheets(tmp_path / "rebuilt")
    assert len(path_ds) == 300 and len(embedded_ds) == 40
    assert path_report.skipped == [] and embedded_report.skipped == []
    assert list(path_ds["answer"]) == rebuilt["digits"]  # committed files == what the generator writes
    assert list(embedded_ds["answer"]) == rebuilt["digits"][:40]
    assert sorted(set(path_ds["answer"])) == list("0123456789")
    assert all(path_ds["answer"].count(d) == 30 for d in "0123456789")  # balanced: chance is exactly 0.1
    first = path_ds[0]
    assert first["source"] == "digits.xlsx:digits:row 2"
    assert first["messages"][0]["content"][0]["type"] == "image"
    assert first["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": first["answer"]}]}
    assert first["images"][0].mode == "RGB" and first["images"][0].size == (56, 56)
    rebuilt_first = Image.open(rebuilt["images"][0]).convert("RGB")
    assert list(rebuilt_first.getdata()) == list(first["images"][0].getdata())
    # the embedded picture in row 2 is the same rendered image as the file in row 2
    assert embedded_ds[0]["image_ref"] == "picture at A2"
    assert embedded_ds[0]["source"] == "digits_embedded.xlsx:数字:row 2"
    assert list(embedded_ds[0]["images"][0].getdata()) == list(first["images"][0].getdata())


def test_path_column_resolves_sheet_folder_then_lab_data_dir(tmp_path, monkeypatch):
    save_png(tmp_path / "sheets" / "pics" / "a.png")
    save_png(tmp_path / "lab-data" / "shared" / "b.png")
    sheet = write_sheet(tmp_path / "sheets" / "s.xlsx", [
        ["Image", "Prompt", "Label"],
        ["pics\\a.png", "What is it?", "A1"],  # Windows separator
        ["shared/b.png", None, 42],
    ])
    ds, report = load_excel_vision(str(sheet))
    assert ds["answer"] == ["A1", "42"]  # a whole number loses no digits and gains no ".0"
    assert ds[0]["messages"][0]["content"][1]["text"] == "What is it?"
    assert ds[1]["messages"][0]["content"][1]["text"] == DEFAULT_PROMPT
    assert report.kept == 2


def test_chinese_headers_sheet_by_name_and_index_and_resizing(tmp_path):
    save_png(tmp_path / "big.png", size=(1000, 500))
    workbook = Workbook()
    workbook.active.title = "说明"
    ws = workbook.create_sheet("数据")
    for row in [["序号", "图片文件", "问题", "读数"], [1, "big.png", "表上的读数是多少？", "00931"]]:
        ws.append(row)
    workbook.save(tmp_path / "中文.xlsx")
    for sheet in ("数据", 1):
        ds, _ = load_excel_vision(str(tmp_path / "中文.xlsx"), sheet=sheet, max_image_side=100)
        assert ds[0]["answer"] == "00931"
        assert ds[0]["images"][0].size == (100, 50)
        assert ds[0]["source"] == "中文.xlsx:数据:row 2"
        assert ds[0]["messages"][0]["content"][1]["text"] == "表上的读数是多少？"


def test_explicit_columns_by_header_or_letter_and_system_prompt(tmp_path):
    save_png(tmp_path / "x.png")
    sheet = write_sheet(tmp_path / "s.xlsx", [["pic", "what", "truth"], ["x.png", "q?", "7"]])
    ds, _ = load_excel_vision(str(sheet), image_column="pic", question_column="B", answer_column="truth",
                              system="Be brief.")
    assert ds[0]["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert ds[0]["answer"] == "7"


def test_every_bad_row_reason_is_reported_with_sheet_and_row(tmp_path):
    save_png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    save_png(tmp_path / "truncated.png", size=(200, 200), color="red")
    data = (tmp_path / "truncated.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    sheet = write_sheet(tmp_path / "bad.xlsx", [
        ["image", "answer"],
        ["ok.png", "1"],          # row 2: good
        ["ok.png", None],         # row 3: empty answer
        [None, "3"],              # row 4: no image
        ["gone.png", "4"],        # row 5: missing file
        ["broken.png", "5"],      # row 6: unreadable image
        ["truncated.png", "6"],   # row 7: unreadable image (cut short)
        [None, None],             # row 8: empty row, not data
        ["ok.png", "  "],         # row 9: empty answer (blank text)
    ])
    ds, report = load_excel_vision(str(sheet))
    assert ds["source"] == ["bad.xlsx:Sheet1:row 2"]
    assert report.counts() == {"empty answer": 2, "no image": 1, "missing file": 1, "unreadable image": 2}
    assert {s["row"]: s["reason"] for s in report.skipped} == {
        3: "empty answer", 4: "no image", 5: "missing file", 6: "unreadable image", 7: "unreadable image",
        9: "empty answer"}
    assert all(s["source"] == "bad.xlsx:Sheet1" for s in report.skipped)
    assert "gone.png" in next(s["detail"] for s in report.skipped if s["row"] == 5)


def test_embedded_pictures_anchor_to_rows_and_rgba_turns_white(tmp_path):
    transparent = tmp_path / "t.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(transparent)
    workbook = Workbook()
    ws = workbook.active
    ws.append(["图像", "标签"])
    ws.append([None, "cat"])
    ws.append([None, "dog"])
    ws.append([None, "no picture here"])
    ws.add_image(SheetImage(str(transparent)), "A3")
    ws.add_image(SheetImage(str(transparent)), "A2")
    workbook.save(tmp_path / "pasted.xlsx")
    ds, report = load_excel_vision(str(tmp_path / "pasted.xlsx"))
    assert ds["answer"] == ["cat", "dog"]
    assert ds[0]["image_ref"] == "picture at A2"
    assert ds[0]["images"][0].getpixel((5, 5)) == (255, 255, 255)
    assert report.counts() == {"no image": 1}


def test_unusable_input_is_one_clear_data_error(tmp_path):
    save_png(tmp_path / "ok.png")
    no_rows = write_sheet(tmp_path / "none.xlsx", [["image", "answer"], ["missing.png", "1"]])
    with pytest.raises(DataError, match=r"none.xlsx: sheet 'Sheet1' has no usable rows .*1 missing file"):
        load_excel_vision(str(no_rows))
    no_answer = write_sheet(tmp_path / "noanswer.xlsx", [["image", "comment"], ["ok.png", "x"]])
    with pytest.raises(DataError, match="no answer column"):
        load_excel_vision(str(no_answer))
    with pytest.raises(DataError, match=r"no sheet named 'Nope'; sheets are \['Sheet1'\]"):
        load_excel_vision(str(no_rows), sheet="Nope")
    with pytest.raises(DataError, match="answer column 'total reading' not found"):
        load_excel_vision(str(no_rows), answer_column="total reading")
    (tmp_path / "fake.xlsx").write_text("not a workbook")
    with pytest.raises(DataError, match=r"fake.xlsx: not a readable .xlsx workbook"):
        load_excel_vision(str(tmp_path / "fake.xlsx"))
