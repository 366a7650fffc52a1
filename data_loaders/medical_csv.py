"""Chinese medical dialogue CSV or paired-lines text -> chat-messages dataset, whatever the encoding.

Medical Q&A exports (e.g. the Chinese medical dialogue data, columns
department,title,ask,answer) arrive as CSV in UTF-8, UTF-8 with a BOM, UTF-16,
GBK/GB18030 or Big5. Hard-coding `encoding="gbk"` gives a UnicodeDecodeError
on some files and silent mojibake on others, so this loader finds the
encoding itself and says which it chose.

Encoding: lab_utils/core/text_decoding.py, the one decoder every text loader shares
(BOM, strict UTF-8, then GB18030 / Big5 with a plausibility check; `encoding=`
forces one). The chosen encoding and each candidate's score are reported.

Layout (`layout=` "auto" | "csv" | "paired_lines"; the experiments' `format` parameter):
the corpora come as CSV or as paired lines (question line, answer line, blank line
between blocks; data_loaders/paired_lines.py). "auto" reads a CSV when the first
line is a header naming the ask and answer columns (or `columns=` is given), else
paired lines when most blank-line-separated blocks pair up, else CSV (whose errors
then say what was expected). Paired-lines rows are numbered by the line their block
starts on ("file.txt:12"), have no department, and go through the same cleaning
and filters; a block that cannot be paired is skipped as "unpaired_lines".

CSV parsing: the delimiter is sniffed from the header line (comma or tab, the
more frequent one); quoted fields may hold delimiters and line breaks; LF, CRLF
and CR line endings may be mixed. Row numbers count CSV records, header = row 1
(a quoted multi-line field is still one row), so `source` "file.csv:7" is
pandas' `df.iloc[5]`.

Columns: headers are matched case- and whitespace-insensitively against
COLUMN_ALIASES (English and Chinese); `columns={"ask": "患者提问", ...}` names
them explicitly. `ask` and `answer` are required, `department` and `title` optional.

Cleaning (`clean_text`): Unicode line breaks become "\\n", control and zero-width
characters are removed, full-width ASCII letters and digits (Ａ-Ｚ, ａ-ｚ, ０-９)
and the ideographic space become their ASCII forms, and the ends are stripped.
Chinese punctuation (，。？！：；（）) is kept: it is the correct punctuation of
Chinese text and the model should learn to write it.

Row filters, each recorded in the SkipReport by reason:
  blank_line         a record with no fields (an empty line)
  wrong_field_count  more fields than headers (an unquoted delimiter in the text)
  empty              the question (title and ask) or the answer is empty after cleaning
  too_short/too_long length(question) + length(answer) outside [min_len, max_len];
                     length = tokens when a tokenizer is given, else characters
  duplicate          the same (question, answer) conversation as an earlier kept row

The question is `title + "\\n" + ask`, except that the title is left out when it is
empty or already contained in the ask (ignoring its closing punctuation), so
the model never sees the same sentence twice.

Schema of the returned dataset (data_loaders.common):
    messages    [system?, user = question, assistant = answer]
    source      "<file name>:<row>"
    department  str, "" when the file has no department column
"""

import csv
import io
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict

from data_loaders.common import DataError, SkipReport, data_error
from data_loaders.paired_lines import UnpairedBlock, block_turns, looks_like_paired_lines, split_blocks
from lab_utils.core.text_decoding import decode_file, plausibility  # noqa: F401  (plausibility: re-exported)
from lab_utils.core.paths import find_data_file
from lab_utils.core.errors import ParamError

DEFAULT_SYSTEM_PROMPT = (
    "你是一名耐心、专业的医学助手。请根据患者的描述给出通俗易懂的健康建议，"
    "说明可能的原因和注意事项；你的回答不能代替医生的诊断，病情严重或持续不缓解时，请建议患者及时就医。"
)

COLUMN_ALIASES = {
    "department": ("department", "dept", "section", "科室", "部门", "科别", "就诊科室"),
    "title": ("title", "subject", "topic", "标题", "主题", "题目", "问题标题"),
    "ask": ("ask", "question", "query", "prompt", "instruction", "input", "问题", "提问", "问", "咨询",
            "病情描述", "患者提问", "描述"),
    "answer": ("answer", "response", "reply", "output", "回答", "回复", "答", "答案", "医生回复", "医生回答"),
}
REQUIRED_COLUMNS = ("ask", "answer")
DELIMITERS = (",", "\t")
LAYOUTS = ("auto", "csv", "paired_lines")

@dataclass
class MedicalCSV:
    """What `load_medical_csv` read: the dataset and how it was read."""

    dataset: Dataset
    path: Path
    encoding: str
    delimiter: str
    columns: dict  # role ("department", "title", "ask", "answer") -> header in the file
    report: SkipReport
    rows_read: int  # data records in the file (header not counted)
    encoding_scores: dict = field(default_factory=dict)  # candidate -> plausibility, or the decode error
    layout: str = "csv"  # "csv" or "paired_lines" (then delimiter is "" and columns {})

    def summary(self) -> str:
        if self.layout == "paired_lines":
            shape = f"paired lines, {self.rows_read} question/answer blocks read"
        else:
            delimiter = "tab" if self.delimiter == "\t" else repr(self.delimiter)
            shape = f"delimiter {delimiter}, {self.rows_read} rows read"
        return f"{self.path.name}: encoding {self.encoding}, {shape}; {self.report.summary()}"


# ---------------------------------------------------------------- CSV structure

def sniff_delimiter(text: str) -> str:
    """Comma or tab, whichever the header line holds more of (comma when neither)."""
    header = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    return max(DELIMITERS, key=header.count)


def _normalise_header(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", name)).casefold()


def detect_columns(headers: list, path, columns: dict | None = None) -> dict:
    """Map each role to its header; `columns` (role -> header) overrides the aliases."""
    normalised = {_normalise_header(h): h for h in headers}
    mapping = {}
    for role, header in (columns or {}).items():
        if role not in COLUMN_ALIASES:
            raise data_error(path, f"columns= names unknown role '{role}'; roles: {list(COLUMN_ALIASES)}")
        if _normalise_header(header) not in normalised:
            raise data_error(path, f"columns= maps '{role}' to '{header}', which is not a header; "
                                   f"headers found: {headers}")
        mapping[role] = normalised[_normalise_header(header)]
    for role, aliases in COLUMN_ALIASES.items():
        if role in mapping:
            continue
        found = [normalised[a] for a in map(_normalise_header, aliases) if a in normalised]
        if found:
            mapping[role] = found[0]
    missing = [role for role in REQUIRED_COLUMNS if role not in mapping]
    if missing:
        wanted = "; ".join(f"'{role}' (one of: {', '.join(COLUMN_ALIASES[role])})" for role in missing)
        raise data_error(path, f"missing required column {wanted}; headers found: {headers}; "
                               f"name them with columns={{'ask': ..., 'answer': ...}}, or pass format paired_lines for "
                               f"question line / answer line blocks")
    return mapping


def read_records(text: str, delimiter: str, path) -> list:
    """All CSV records of the text, header first, quoted line breaks kept inside fields."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter, strict=True)
    records = []
    try:
        for record in reader:
            records.append(record)
    except csv.Error as exc:
        kind = "tab" if delimiter == "\t" else "comma"
        raise data_error(path, f"malformed CSV near line {reader.line_num} ({exc}); expected {kind}-separated "
                               f"fields, text with quotes or line breaks inside double quotes "
                               f"(question line / answer line blocks: pass format paired_lines)",
                         row=len(records) + 1) from None
    return records


# ---------------------------------------------------------------- cleaning

_LINE_BREAKS = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c]")
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060\ufeff]")
_FULLWIDTH_ALNUM = {code: code - 0xFEE0 for code in
                    [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B)]}
_FULLWIDTH_ALNUM[0x3000] = 0x20  # ideographic space


def clean_text(text: str) -> str:
    """Normalise one field; see the module docstring for exactly what changes."""
    text = _LINE_BREAKS.sub("\n", text or "")
    text = _INVISIBLE.sub("", text.translate(_FULLWIDTH_ALNUM))
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return text.strip()


_CLOSING_PUNCT = "？?。.!！~～ "


def build_question(title: str, ask: str) -> str:
    """Title + ask, without the title when it is empty or already inside the ask."""
    core = title.rstrip(_CLOSING_PUNCT)
    if not core or core in ask:
        return ask
    return f"{title}\n{ask}" if ask else title


def character_length(texts: list) -> list:
    return [len(t) for t in texts]


def tokenizer_length(tokenizer):
    def lengths(texts: list) -> list:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return lengths


# ---------------------------------------------------------------- layout: CSV or paired lines

def header_is_recognised(text: str, delimiter: str, columns: dict | None) -> bool:
    """Whether the first line is a CSV header naming (at least) the ask and answer columns."""
    first = next((line for line in text.lstrip("\ufeff").splitlines() if line.strip()), "")
    headers = [h.strip() for h in next(csv.reader([first], delimiter=delimiter), [])]
    if len(headers) < 2:
        return False
    try:
        detect_columns(headers, None, columns)
        return True
    except DataError:
        return False


def choose_layout(text: str, layout: str, delimiter: str, columns: dict | None, path) -> str:
    """"csv" or "paired_lines": as asked, else detected (a recognised CSV header wins)."""
    if layout not in LAYOUTS:
        raise data_error(path, f"format '{layout}' is unknown; expected one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    if columns or header_is_recognised(text, delimiter, columns):
        return "csv"
    return "paired_lines" if looks_like_paired_lines(text) else "csv"


# ---------------------------------------------------------------- the loader

def load_medical_csv(path, encoding: str | None = None, columns: dict | None = None,
                     system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, min_len: int = 8,
                     max_len: int = 2048, tokenizer=None, delimiter: str | None = None,
                     layout: str = "auto") -> MedicalCSV:
    """Read a medical dialogue CSV or paired-lines file into the chat-messages schema; see the module docstring.

    `path` is found with lab_utils.core.paths.find_data_file (relative to LAB_DATA_DIR,
    the bundled samples, or as given). `system_prompt=None` leaves the system message out.
    `layout`: "auto" (detect), "csv" or "paired_lines".
    """
    path = find_data_file(str(path))
    text, encoding, scores = decode_file(path, encoding, expected="a CSV or paired-lines text file")
    delimiter = delimiter or sniff_delimiter(text)
    layout = choose_layout(text, layout, delimiter, columns, path)
    if layout == "paired_lines":
        candidates, report, rows_read, mapping, delimiter = *_paired_candidates(text, path), {}, ""
    else:
        candidates, report, rows_read, mapping = _csv_candidates(text, delimiter, columns, path)
    rows = _filter_candidates(candidates, report, min_len, max_len, tokenizer)
    if not rows:
        raise data_error(path, f"no usable rows: {report.summary()}")
    dataset = _to_dataset(rows, system_prompt)
    return MedicalCSV(dataset, path, encoding, delimiter, mapping, report, rows_read, scores, layout)


def _csv_candidates(text: str, delimiter: str, columns: dict | None, path):
    """(candidates, SkipReport, data records read, column mapping) of a CSV file."""
    records = read_records(text, delimiter, path)
    if not records or not any(h.strip() for h in records[0]):
        raise data_error(path, "no header row; expected column names in the first line")
    headers = [h.strip() for h in records[0]]
    mapping = detect_columns(headers, path, columns)
    if len(records) < 2:
        raise data_error(path, f"has a header row ({headers}) but no data rows")
    report, candidates = SkipReport(), []
    index = {role: headers.index(header) for role, header in mapping.items()}
    for row_number, record in enumerate(records[1:], start=2):
        source = f"{path.name}:{row_number}"
        if not any(field.strip() for field in record):
            report.skip(source, row_number, "blank_line")
            continue
        if len(record) > len(headers):
            report.skip(source, row_number, "wrong_field_count",
                        f"{len(record)} fields for {len(headers)} headers: {record[len(headers):]}")
            continue
        values = {role: clean_text(record[i]) if i < len(record) else "" for role, i in index.items()}
        question = build_question(values.get("title", ""), values["ask"])
        if not question or not values["answer"]:
            report.skip(source, row_number, "empty", "no question" if not question else "no answer")
            continue
        turns = (("user", question), ("assistant", values["answer"]))
        candidates.append((row_number, source, values.get("department", ""), turns))
    return candidates, report, len(records) - 1, mapping


def _paired_candidates(text: str, path):
    """(candidates, SkipReport, blocks read) of a paired-lines file; row = the block's first line."""
    report, candidates = SkipReport(), []
    blocks = split_blocks(text)
    for line_number, lines in blocks:
        source = f"{path.name}:{line_number}"
        try:
            turns = tuple((role, clean_text(content)) for role, content in block_turns(lines))
        except UnpairedBlock as unpaired:
            report.skip(source, line_number, "unpaired_lines", str(unpaired))
            continue
        if not all(content for _, content in turns):
            report.skip(source, line_number, "empty", "a question or answer line is empty after cleaning")
            continue
        candidates.append((line_number, source, "", turns))
    return candidates, report, len(blocks)


def _filter_candidates(candidates, report, min_len, max_len, tokenizer) -> list:
    """Drop (and report) conversations outside [min_len, max_len] and repeats; returns the kept ones."""
    lengths = (tokenizer_length(tokenizer) if tokenizer is not None else character_length)
    turn_lengths = iter(lengths([content for *_, turns in candidates for _, content in turns]))
    kept, first_seen = [], {}
    for candidate in candidates:
        row_number, source, _, turns = candidate
        total = sum(next(turn_lengths) for _ in turns)
        if total < min_len or (max_len is not None and total > max_len):
            reason = "too_short" if total < min_len else "too_long"
            report.skip(source, row_number, reason, f"length {total} outside [{min_len}, {max_len}]")
        elif turns in first_seen:
            report.skip(source, row_number, "duplicate", f"same conversation as row {first_seen[turns]}")
        else:
            first_seen[turns] = row_number
            kept.append(candidate)
    report.kept = len(kept)
    return kept


def _to_dataset(rows, system_prompt) -> Dataset:
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return Dataset.from_dict({
        "messages": [system + [{"role": role, "content": content} for role, content in turns] for *_, turns in rows],
        "source": [source for _, source, _, _ in rows],
        "department": [department for _, _, department, _ in rows],
    })


def split_dataset(dataset: Dataset, seed: int = 42, validation: float = 0.05, test: float = 0.05) -> DatasetDict:
    """A deterministic train/validation/test split: the same seed gives the same rows.

    Fractions are rounded to whole rows; a non-zero fraction gets at least one
    row while the training split keeps at least one.
    """
    if validation < 0 or test < 0 or validation + test >= 1:
        raise ParamError(f"validation ({validation}) and test ({test}) must be >= 0 and sum to less than 1")
    n = len(dataset)
    sizes = [max(1, round(n * f)) if f > 0 else 0 for f in (validation, test)]
    if n - sum(sizes) < 1:
        raise DataError(f"{n} rows are too few for a train/validation/test split of {validation}/{test}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val, n_test = sizes
    return DatasetDict({
        "train": dataset.select(order[n_val + n_test:]),
        "validation": dataset.select(order[:n_val]),
        "test": dataset.select(order[n_val:n_val + n_test]),
    })
