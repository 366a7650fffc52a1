"""The bundled vision sample: one large rendered digit per picture, as the two kinds of sheet users keep.

    make_sample_sheets(folder)  writes, deterministically for a given seed,
        folder/images/digit_NNN.png     56x56 renders of one dark digit on light paper (tint, size, place vary)
        folder/digits.xlsx              English headers: image (relative path) | question (same on every row) | answer
        folder/digits_embedded.xlsx     Chinese headers: 图片 (pictures pasted into the cells) | 答案

Why this toy: the CPU demo trains a *random* tiny Qwen2.5-VL from scratch, so the task has
to be learnable in a few hundred steps on two cores. A 56x56 picture is 4 vision tokens
(one 28x28 merged patch each), a single digit has 10 answers (chance = 0.1), and a few
hundred rows are enough to learn them, with held-out renders the model has never seen.

data/samples/vision/ holds the committed output of `make_sample_sheets()` with the
defaults; tests and the demo can rebuild it anywhere (e.g. a tmp folder) with the same
call. Answers are stored as text cells.
"""

import random
from pathlib import Path

from openpyxl import Workbook
from openpyxl.drawing.image import Image as SheetImage
from PIL import Image, ImageDraw, ImageFont

from lab_utils.core.paths import SAMPLES_DIR

SAMPLE_DIR = SAMPLES_DIR / "vision"
PATH_SHEET = "digits.xlsx"
EMBEDDED_SHEET = "digits_embedded.xlsx"
IMAGE_SIDE = 56  # pixels: 2x2 merged patches of 28 px = 4 vision tokens for the tiny model
# One short fixed question on every row. Measured with the demo defaults (150 steps, tiny
# random model): with three questions taking turns the answer never depended on the picture
# (held-out accuracy 0.03), nor with "Which digit is shown?" on every row (eval loss stuck at
# the 1.15 of guessing after 90 steps); with "Digit?" it reads the digit (0.00 -> 0.70).
# The random vision features separate the digits perfectly (a linear probe on the merger
# output scores 1.0): what is slow is routing them to the answer, across the question text.
QUESTION = "Digit?"


def render_digit_image(digit: str, rng: random.Random, side: int = IMAGE_SIDE) -> Image.Image:
    """One dark digit filling most of a light square; paper and ink tint, size and place vary a little.

    Deliberately easy (one font, upright, nearly centred): a random model has to learn it from
    a few hundred pictures in minutes. Flipped colours, slants and big shifts made it need
    thousands of steps.
    """
    paper = tuple(rng.randint(200, 255) for _ in range(3))
    ink = tuple(rng.randint(0, 70) for _ in range(3))
    image = Image.new("RGB", (side, side), paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(side * rng.uniform(0.76, 0.84)))
    left, top, right, bottom = draw.textbbox((0, 0), digit, font=font)
    x = (side - (right - left)) // 2 - left + rng.randint(-2, 2)
    y = (side - (bottom - top)) // 2 - top + rng.randint(-2, 2)
    draw.text((x, y), digit, fill=ink, font=font)
    return image


def sample_digits(count: int, seed: int) -> list[str]:
    """`count` digits, each of 0-9 equally often (then shuffled): chance stays exactly 0.1."""
    digits = [str(i % 10) for i in range(count)]
    random.Random(seed).shuffle(digits)
    return digits


def write_images(folder: Path, digits: list[str], seed: int) -> list[Path]:
    rng = random.Random(seed + 1)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, digit in enumerate(digits, start=1):
        path = images_dir / f"digit_{index:03d}.png"
        render_digit_image(digit, rng).save(path, optimize=True)
        paths.append(path)
    return paths


def write_path_sheet(path: Path, image_paths: list[Path], digits: list[str]) -> Path:
    """Sheet 'digits': image (path relative to the sheet) | question | answer (text)."""
    workbook = Workbook()
    ws = workbook.active
    ws.title = "digits"
    ws.append(["image", "question", "answer"])
    for image_path, digit in zip(image_paths, digits):
        ws.append([image_path.relative_to(path.parent).as_posix(), QUESTION, digit])
        ws.cell(ws.max_row, 3).number_format = "@"  # text: the answer is what was written, not a number
    ws.column_dimensions["A"].width = 24
    ws.column_dimensions["B"].width = 44
    workbook.save(path)
    return path


def write_embedded_sheet(path: Path, image_paths: list[Path], digits: list[str]) -> Path:
    """Sheet '数字': pictures pasted into column A (one per row) | 答案 (text)."""
    workbook = Workbook()
    ws = workbook.active
    ws.title = "数字"
    ws.append(["图片", "答案"])
    ws.column_dimensions["A"].width = 10
    for row, (image_path, digit) in enumerate(zip(image_paths, digits), start=2):
        ws.cell(row, 2, digit).number_format = "@"
        ws.row_dimensions[row].height = 44  # points; the picture's top-left is what ties it to the row
        ws.add_image(SheetImage(str(image_path)), f"A{row}")
    workbook.save(path)
    return path


def make_sample_sheets(folder=None, count: int = 300, embedded_count: int = 40, seed: int = 0) -> dict:
    """Write the sample images and both sheets into `folder` (default data/samples/vision)."""
    folder = Path(folder) if folder is not None else SAMPLE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    digits = sample_digits(count, seed)
    image_paths = write_images(folder, digits, seed)
    return {
        "path_sheet": write_path_sheet(folder / PATH_SHEET, image_paths, digits),
        "embedded_sheet": write_embedded_sheet(folder / EMBEDDED_SHEET, image_paths[:embedded_count],
                                               digits[:embedded_count]),
        "images": image_paths,
        "digits": digits,
    }
