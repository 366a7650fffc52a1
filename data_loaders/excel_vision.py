"""Excel sheets of images and answers -> vision chat rows for Qwen2.5-VL-style SFT.

Users keep image data the way they keep everything else: a sheet with one row per
picture, a column naming the image file (or the picture pasted into the row), an
optional question column and an answer column (a meter reading, a product label).

    | image             | question               | answer |
    | meters/m_001.png  | What does the meter show? | 04712  |
    | <picture pasted>  |                        | 00931  |

Where a row's image comes from:
    pictures pasted into the sheet and anchored to the row (top-left corner in it),
    ordered left to right; otherwise the image column's file name, resolved as given
    if absolute, else against the sheet's folder, then LAB_DATA_DIR. Windows-style
    backslashes are accepted.

Headers are found in `header_row` (1-based, default 1) by name, English or Chinese
(image/图片/图像/文件..., question/prompt/问题..., answer/label/答案/标签/读数...),
or given explicitly as header text or a column letter ("B").

Every row becomes (a `datasets.Dataset`; see data_loaders/common.py for the shared parts):

    messages   [{"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
               (a system turn first when `system` is given), the form the Qwen2.5-VL chat
               template and TRL/Unsloth vision collators expect; one {"type": "image"} per image
    images     list of PIL RGB images, longer side <= max_image_side and, when max_pixels is
               given, width*height <= max_pixels (aspect ratio kept); the report counts the
               images shrunk to fit (`resized`)
    answer     str, the answer cell as text (whole numbers without ".0"; zero-padded
               number formats such as 00000 keep their leading zeros)
    source     "<file>:<sheet>:row <n>" (n = the Excel row number a user sees)
    image_ref  the file name or "picture at B5", for error analysis

Rows that are entirely empty (no value, no picture) are not data and are passed
over; every other unusable row goes into the SkipReport with one of these reasons:
    empty answer, no image, missing file, unreadable image.
A sheet with no usable row is one DataError.
"""

import io
import re
import unicodedata
from datetime import date, datetime
from pathlib import Path

from openpyxl import load_workbook
from openpyxl.utils import column_index_from_string, get_column_letter
from PIL import Image, ImageOps, UnidentifiedImageError

from data_loaders.common import SkipReport, data_error, kept_rows
from lab_utils.core.paths import data_dir, find_data_file

DEFAULT_PROMPT = "What is the reading shown in this image? Answer with the value only."
DEFAULT_MAX_IMAGE_SIDE = 448  # 16x16 vision patches after 28-px merging in Qwen2.5-VL; plenty for digits

# Lower-case header names per role; matched exactly first, then as a part of the header.
HEADER_ALIASES = {
    "image": ["image", "images", "image path", "image file", "picture", "photo", "file", "filename",
              "file name", "path", "img", "图片", "图像", "照片", "图片路径", "文件", "文件名", "路径"],
    "question": ["question", "prompt", "instruction", "query", "问题", "提示", "提示词", "指令", "提问"],
    "answer": ["answer", "label", "reading", "value", "target", "output", "response", "caption",
               "答案", "标签", "读数", "结果", "数值", "回答", "标注"],
}

SKIP_REASONS = ("empty answer", "no image", "missing file", "unreadable image")


class SkipRow(Exception):
    """A row that cannot be used; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# ---------------------------------------------------------------- workbook, sheet, headers

def open_sheet(path: Path, sheet=None):
    """The worksheet by name or 0-based index (default: the first one)."""
    try:
        # data_only: a formula cell gives the value Excel last computed, not the formula text.
        workbook = load_workbook(path, data_only=True)
    except Exception as err:  # zip/XML errors from deep inside openpyxl
        raise data_error(path, f"not a readable .xlsx workbook ({type(err).__name__}: {err})") from None
    names = workbook.sheetnames
    if sheet is None:
        return workbook[names[0]]
    if isinstance(sheet, int):
        if not 0 <= sheet < len(names):
            raise data_error(path, f"sheet index {sheet} out of range; the workbook has {len(names)} sheet(s): {names}")
        return workbook[names[sheet]]
    if sheet not in names:
        raise data_error(path, f"no sheet named '{sheet}'; sheets are {names}")
    return workbook[sheet]


def normalise_header(text) -> str:
    text = unicodedata.normalize("NFKC", str(text or "")).strip().lower()
    return re.sub(r"[\s_\-:：]+", " ", text).strip()


def header_names(ws, header_row: int) -> dict:
    """Column index (1-based) -> normalised header text, for the non-empty header cells."""
    cells = next(ws.iter_rows(min_row=header_row, max_row=header_row), ())
    return {cell.column: normalise_header(cell.value) for cell in cells if normalise_header(cell.value)}


def detect_column(headers: dict, role: str):
    """The column whose header names `role`: an exact alias first, else one containing an alias."""
    aliases = HEADER_ALIASES[role]
    for column, name in headers.items():
        if name in aliases:
            return column
    for column, name in headers.items():
        if any(alias in name for alias in aliases if len(alias) > 2 or not alias.isascii()):
            return column
    return None


def explicit_column(path, headers: dict, given, role: str) -> int:
    """A column the user named: its header text, or an Excel letter like 'B'."""
    wanted = normalise_header(given)
    for column, name in headers.items():
        if name == wanted:
            return column
    if re.fullmatch(r"[A-Za-z]{1,3}", str(given).strip()):
        return column_index_from_string(str(given).strip().upper())
    raise data_error(path, f"{role} column '{given}' not found; headers are {list(headers.values())}")


def find_columns(path, ws, header_row, image_column, question_column, answer_column) -> dict:
    """Column index per role ('question' may be None: the default prompt is used)."""
    headers = header_names(ws, header_row)
    given = {"image": image_column, "question": question_column, "answer": answer_column}
    columns = {
        role: explicit_column(path, headers, value, role) if value is not None else detect_column(headers, role)
        for role, value in given.items()
    }
    if columns["answer"] is None:
        raise data_error(path, f"no answer column found in header row {header_row} "
                         f"(headers: {list(headers.values())}); "
                         "expected one named answer/label/reading/答案/标签/读数, or pass answer_column=",
                         field_name="answer")
    if columns["image"] is None and not ws._images:
        raise data_error(path, f"no image column in header row {header_row} (headers: {list(headers.values())}) "
                         "and no pictures in the sheet; expected a column named image/file/图片, or pass image_column=",
                         field_name="image")
    return columns


# ---------------------------------------------------------------- cell values

def answer_text(cell) -> str:
    """An answer cell as the text a user sees in Excel."""
    value = cell.value
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not value.is_integer():
            return repr(value)
        text = str(int(value))
        # A reading typed as 00931 and shown through a 00000 number format keeps its zeros.
        if re.fullmatch(r"0+", str(cell.number_format or "")):
            text = text.zfill(len(cell.number_format))
        return text
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value).strip()


def cell_text(cell) -> str:
    return "" if cell is None or cell.value is None else str(cell.value).strip()


# ---------------------------------------------------------------- images

def prepare_image(image: Image.Image, max_side: int, max_pixels: int | None = None) -> Image.Image:
    """Upright RGB on white, longer side at most `max_side` and at most `max_pixels` pixels (aspect ratio kept)."""
    image = ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, "white")  # transparent pixels would turn black
        image = Image.alpha_composite(background, image)
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if max_pixels and image.width * image.height > max_pixels:
        scale = (max_pixels / (image.width * image.height)) ** 0.5
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))),
                             Image.Resampling.LANCZOS)
    return image


def open_image_bytes(data: bytes, max_side: int, what: str, max_pixels: int | None = None, report=None) -> Image.Image:
    """Open, verify and prepare an image; SkipRow('unreadable image') if PIL cannot.

    A shrunk one counts in report.resized."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated/corrupt files that open() alone accepts
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            prepared = prepare_image(image, max_side, max_pixels)
            if report is not None and prepared.width * prepared.height < image.width * image.height:
                report.resized += 1
            return prepared
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SkipRow("unreadable image", f"{what}: {type(err).__name__}: {err}") from None


def resolve_image_path(name: str, sheet_folder: Path) -> Path:
    """A file name from the image column -> an existing file; SkipRow('missing file') if none."""
    relative = Path(name.replace("\\", "/")).expanduser()
    candidates = [relative] if relative.is_absolute() else [sheet_folder / relative, data_dir() / relative]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SkipRow("missing file", f"'{name}' not found (looked in: {', '.join(str(c.parent) for c in candidates)})")


def anchored_pictures(ws) -> dict:
    """Excel row (1-based) -> [(column letter, image bytes)] for pictures pasted into the sheet."""
    by_row = {}
    for picture in ws._images:
        anchor = getattr(picture.anchor, "_from", None)
        if anchor is None:  # an absolute anchor belongs to no row
            continue
        by_row.setdefault(anchor.row + 1, []).append((anchor.col, picture))
    return {
        row: [(get_column_letter(col + 1), picture._data()) for col, picture in sorted(items, key=lambda item: item[0])]
        for row, items in by_row.items()
    }


def row_images(row_number, image_cell, pictures, sheet_folder, max_side, max_pixels=None, report=None):
    """The row's images and a short reference to where they came from."""
    if pictures:
        images = [open_image_bytes(data, max_side, f"picture at {col}{row_number}", max_pixels, report)
                  for col, data in pictures]
        return images, ", ".join(f"picture at {col}{row_number}" for col, _ in pictures)
    name = cell_text(image_cell)
    if not name:
        raise SkipRow("no image", "the image cell is empty and no picture is anchored in this row")
    path = resolve_image_path(name, sheet_folder)
    return [open_image_bytes(path.read_bytes(), max_side, name, max_pixels, report)], name


# ---------------------------------------------------------------- rows -> dataset

def vision_messages(question: str, answer: str, n_images: int = 1, system: str | None = None) -> list[dict]:
    """One single-turn image conversation in the Qwen2.5-VL content-list form."""
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    user = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
    messages += [{"role": "user", "content": user},
                 {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return messages


def is_empty_row(cells, pictures) -> bool:
    return not pictures and all(cell.value is None or str(cell.value).strip() == "" for cell in cells)


def load_excel_vision(
    name: str,
    sheet: str | int | None = None,
    image_column: str | None = None,
    question_column: str | None = None,
    answer_column: str | None = None,
    default_prompt: str = DEFAULT_PROMPT,
    system: str | None = None,
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
    max_pixels: int | None = None,
    header_row: int = 1,
    limit: int | None = None,
):
    """Load an image/answer sheet. Returns (Dataset, SkipReport); see the module docstring."""
    path = find_data_file(name)
    ws = open_sheet(path, sheet)
    columns = find_columns(path, ws, header_row, image_column, question_column, answer_column)
    pictures_by_row = anchored_pictures(ws)
    last_row = max([ws.max_row, *pictures_by_row]) if pictures_by_row else ws.max_row
    where = f"{path.name}:{ws.title}"
    report, rows = SkipReport(), []
    for row_number in range(header_row + 1, last_row + 1):
        cells = [ws.cell(row_number, c) for c in range(1, max(ws.max_column, *filter(None, columns.values())) + 1)]
        pictures = pictures_by_row.get(row_number, [])
        if is_empty_row(cells, pictures):
            continue
        try:
            answer = answer_text(ws.cell(row_number, columns["answer"]))
            if not answer:
                raise SkipRow("empty answer", f"column {get_column_letter(columns['answer'])} is empty")
            image_cell = ws.cell(row_number, columns["image"]) if columns["image"] else None
            images, image_ref = row_images(row_number, image_cell, pictures, path.parent, max_image_side, max_pixels,
                                           report)
        except SkipRow as skip:
            report.skip(where, row_number, skip.reason, skip.detail)
            continue
        question = cell_text(ws.cell(row_number, columns["question"])) if columns["question"] else ""
        rows.append({
            "messages": vision_messages(question or default_prompt, answer, len(images), system),
            "images": images,
            "answer": answer,
            "source": f"{where}:row {row_number}",
            "image_ref": image_ref,
        })
        if limit and len(rows) >= limit:
            break
    return kept_rows(rows, report, path, f"sheet '{ws.title}' has no usable rows",
                     "expected rows with an image (file name or pasted picture) and an answer")
