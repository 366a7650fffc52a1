"""The paired-lines text layout of Chinese medical dialogue corpora: question line, answer line, blank line.

    我最近总是头疼，是怎么回事？
    头疼的原因很多，常见的有睡眠不足、紧张和感冒。……

    孩子发烧三十八度五，要吃退烧药吗？
    三十八度五以上、孩子精神不好时可以用退烧药。……

Such files (often GBK, named .txt or even .csv) are no CSV: a quote or comma in the
text makes a CSV reader fail thousands of lines in ("malformed CSV near line 3850").
This module finds the blocks and their turns; data_loaders/medical_csv.py decodes the
file, cleans the text and filters the rows exactly as it does for a CSV.

A block is a run of non-blank lines (lines holding only whitespace are blank).
  - Plain lines alternate question / answer: 2 lines = one exchange, 4 lines = two
    turns each. An odd number of lines cannot be paired: the block is skipped
    ("unpaired_lines") and reported, never guessed at.
  - Lines may start with a speaker label (问：/答：, 患者：/医生：, 病人：/医生：,
    用户：/助手：, Q:/A:, full- or half-width colon). The label sets the role and is
    removed; an unlabelled line continues the turn above it (an answer written over
    several lines). The turns must then alternate, starting with the question and
    ending with the answer, else the block is skipped ("unpaired_lines").

Detection (`looks_like_paired_lines`), used when the layout is "auto": a file is
paired-lines when it has at least two blocks and at least PAIRED_SHARE of them
(in the first SAMPLE_LINES lines) can be paired. A CSV has no blank lines between
its rows, so it is one block; the caller checks for a CSV header first anyway.
"""

import re

ROLE_LABELS = {
    "user": ("问", "提问", "患者", "病人", "用户", "q", "question"),
    "assistant": ("答", "回答", "医生", "助手", "a", "answer"),
}
_ROLE_OF_LABEL = {label: role for role, labels in ROLE_LABELS.items() for label in labels}
_LABEL = re.compile(r"^\s*(" + "|".join(sorted(_ROLE_OF_LABEL, key=len, reverse=True)) + r")\s*[:：]\s*",
                    flags=re.IGNORECASE)
PAIRED_SHARE = 0.8
SAMPLE_LINES = 5000


class UnpairedBlock(ValueError):
    """A block whose lines cannot be read as question/answer turns; the message says why."""


def split_blocks(text: str, max_lines: int | None = None) -> list[tuple[int, list[str]]]:
    """(1-based line number of its first line, its lines) for every block of non-blank lines."""
    blocks, current, start = [], [], 0
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if max_lines is not None and number > max_lines:
            break
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _label(line: str):
    match = _LABEL.match(line)
    return (_ROLE_OF_LABEL[match.group(1).lower()], line[match.end():]) if match else (None, line)


def block_turns(lines: list[str]) -> list[tuple[str, str]]:
    """The block's (role, text) turns, user first and assistant last; UnpairedBlock otherwise."""
    if _label(lines[0])[0] is None:  # plain lines: they alternate
        if len(lines) % 2:
            raise UnpairedBlock(f"{len(lines)} lines: expected question line, answer line pairs")
        return [("user" if i % 2 == 0 else "assistant", line) for i, line in enumerate(lines)]
    turns = []
    for line in lines:
        role, content = _label(line)
        if role is None or (turns and turns[-1][0] == role):  # continues the turn above
            turns[-1] = (turns[-1][0], turns[-1][1] + "\n" + content)
        else:
            turns.append((role, content))
    roles = [role for role, _ in turns]
    if roles[0] != "user" or roles[-1] != "assistant":
        raise UnpairedBlock(f"speaker labels give turns {roles}: expected a question first and an answer last")
    return turns


def is_pairable(lines: list[str]) -> bool:
    try:
        block_turns(lines)
        return True
    except UnpairedBlock:
        return False


def looks_like_paired_lines(text: str) -> bool:
    """At least two blocks, and most of them read as question/answer turns (see the module docstring)."""
    blocks = split_blocks(text, max_lines=SAMPLE_LINES)
    if len(blocks) < 2:
        return False
    return sum(is_pairable(lines) for _, lines in blocks) >= PAIRED_SHARE * len(blocks)
