"""The bundled vision sample: rendered meter readings, as the two kinds of sheet users keep.

    make_sample_sheets(folder)  writes, deterministically for a given seed,
        folder/images/meter_NN.png        small (112x48) renders of a 5-digit meter display
        folder/meter_readings.xlsx        English headers: image (relative path) | question | answer
        folder/meter_readings_embedded.xlsx
                                          Chinese headers: 图片 (pictures pasted into the cells) | 读数

data/samples/vision/ holds the committed output of `make_sample_sheets()` with the
defaults; tests and the demo can rebuild it anywhere (e.g. a tmp folder) with the same
call. The readings are zero-padded strings (odometers show leading zeros), stored as text
in the sheets so nothing turns "00931" into 931.
"""

import random
from pathlib import Path

from openpyxl import Workbook
from openpyxl.drawing.image import Image as SheetImage
from PIL import Image, ImageDraw, ImageFont

from lab_utils.paths import SAMPLES_DIR

SAMPLE_DIR = SAMPLES_DIR / "vision"
PATH_SHEET = "meter_readings.xlsx"
EMBEDDED_SHEET = "meter_readings_embedded.xlsx"
IMAGE_SIZE = (112, 48)
QUESTIONS = [
    "What is the reading shown on this meter?",
    "Read the meter. Answer with the digits only.",
    "Which number does the display show?",
]


def render_meter_image(reading: str, rng: random.Random, size=IMAGE_SIZE) -> Image.Image:
    """A dark meter display with light digits; small jitter in colour and position per image."""
    background = tuple(rng.randint(10, 60) for _ in range(3))
    ink = (rng.randint(200, 255), rng.randint(180, 255), rng.randint(60, 160))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=28)
    left, top, right, bottom = draw.textbbox((0, 0), reading, font=font)
    x = (size[0] - (right - left)) // 2 - left + rng.randint(-3, 3)
    y = (size[1] - (bottom - top)) // 2 - top + rng.randint(-2, 2)
    draw.rectangle([2, 2, size[0] - 3, size[1] - 3], outline=(120, 120, 120), width=2)  # the meter's bezel
    draw.text((x, y), reading, fill=ink, font=font)
    return image


def sample_readings(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.randint(0, 99999):05d}" for _ in range(count)]


def write_images(folder: Path, readings: list[str], seed: int) -> list[Path]:
    rng = random.Random(seed + 1)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, reading in enumerate(readings, start=1):
        path = images_dir / f"meter_{index:02d}.png"
        render_meter_image(reading, rng).save(path, optimize=True)
        paths.append(path)
    return paths


def write_path_sheet(path: Path, image_paths: list[Path], readings: list[str]) -> Path:
    """Sheet 'readings': image (path relative to the sheet) | question | answer (text)."""
    workbook = Workbook()
    ws = workbook.active
    ws.title = "readings"
    ws.append(["image", "question", "answer"])
    for index, (image_path, reading) in enumerate(zip(image_paths, readings)):
        ws.append([image_path.relative_to(path.parent).as_posix(), QUESTIONS[index % len(QUESTIONS)], reading])
        ws.cell(ws.max_row, 3).number_format = "@"  # text, so leading zeros stay
    ws.column_dimensions["A"].width = 24
    ws.column_dimensions["B"].width = 44
    workbook.save(path)
    return path


def write_embedded_sheet(path: Path, image_paths: list[Path], readings: list[str]) -> Path:
    """Sheet '读数': pictures pasted into column A (one per row) | 读数 (text)."""
    workbook = Workbook()
    ws = workbook.active
    ws.title = "读数"
    ws.append(["图片", "读数"])
    ws.column_dimensions["A"].width = 18
    for row, (image_path, reading) in enumerate(zip(image_paths, readings), start=2):
        ws.cell(row, 2, reading).number_format = "@"
        ws.row_dimensions[row].height = 40  # points; the picture's top-left is what ties it to the row
        ws.add_image(SheetImage(str(image_path)), f"A{row}")
    workbook.save(path)
    return path


def make_sample_sheets(folder=None, count: int = 24, embedded_count: int = 12, seed: int = 0) -> dict:
    """Write the sample images and both sheets into `folder` (default data/samples/vision)."""
    folder = Path(folder) if folder is not None else SAMPLE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    readings = sample_readings(count, seed)
    image_paths = write_images(folder, readings, seed)
    return {
        "path_sheet": write_path_sheet(folder / PATH_SHEET, image_paths, readings),
        "embedded_sheet": write_embedded_sheet(folder / EMBEDDED_SHEET, image_paths[:embedded_count], readings[:embedded_count]),
        "images": image_paths,
        "readings": readings,
    }
