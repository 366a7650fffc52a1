"""GSM8K-style JSONL -> prompt-only dataset for GRPO.

Input: one JSON object per line with
    question  the word problem
    answer    the worked solution, ending in "#### <final answer>"
              (GSM8K marks calculator steps as <<48/2=24>>)

Output (`datasets.Dataset`, TRL's conversational *prompt-only* format, which
is why it has `prompt` where the SFT loaders have `messages`):
    prompt    list of {"role", "content"}: a system message asking for the
              <reasoning>/<answer> format (rewards.SYSTEM_PROMPT by default),
              then the user's question. The model writes the rest.
    answer    str, the gold final answer in the canonical spelling of
              rewards.numeric.normalise_number ("1,200" -> "1200", "5.0" -> "5"),
              so the correctness rewards and the data agree on what a number is.
              TRL hands this column to the rewards as answer=[...].
    solution  str, the gold worked solution without the "#### n" line and without
              the <<...>> calculator annotations (for display, or an SFT warm-up)
    source    str, "<file name>:<line number>"

Rows that cannot be used are recorded in the SkipReport (never dropped
silently): bad JSON, not an object, a missing or empty field, no "####", a
final answer that is not a number, and — when a tokenizer and
max_prompt_length are given — a prompt longer than max_prompt_length tokens
after the chat template (TRL no longer truncates prompts, so an overlong one
would otherwise reach the model whole). Blank lines are not rows.
The file may be in any encoding lab_utils.core.text_decoding detects (Chinese
word problems arrive as GBK too). An empty file, a file that is not JSONL at all, or one without a single
usable row raises DataError.

    load_gsm8k("gsm8k_sample.jsonl")                      the bundled sample
    load_gsm8k("gsm8k", split_file="test.jsonl")          $LAB_DATA_DIR/gsm8k/test.jsonl

For a supervised warm-up before GRPO, `worked_solution_conversations(prompts)`
turns the same rows into SFT conversations (schema `messages`, `source`, as the
SFT loaders return) whose assistant turn is the gold solution written in the
target format (`target_format_answer`).
"""

import json
import logging
import re
from pathlib import Path

from datasets import Dataset

from data_loaders.common import SkipReport, data_error
from lab_utils.core.text_decoding import read_text
from lab_utils.core.paths import find_data_file
from lab_utils.core.errors import DataError
from rewards import SYSTEM_PROMPT
from rewards.extract import extract_hash_answer
from rewards.numeric import normalise_number

log = logging.getLogger("lab")

REQUIRED_FIELDS = ("question", "answer")
_CALCULATOR = re.compile(r"<<[^<>]*>>")


class RowSkip(Exception):
    """One row the loader cannot use; carries the reason recorded in the SkipReport."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def resolve_gsm8k_file(path_or_name, split_file: str = "train.jsonl") -> Path:
    """A JSONL file, or a folder (under LAB_DATA_DIR, e.g. "gsm8k") holding `split_file`."""
    path = find_data_file(str(path_or_name))
    if path.is_dir():
        path = find_data_file(str(path / split_file))
    return path


def read_jsonl(path: Path, encoding: str | None = None):
    """(line number, parsed object or RowSkip) for every non-blank line; DataError for unreadable files."""
    text, _ = read_text(path, encoding, expected="JSON lines with 'question' and 'answer'")
    lines = text.splitlines()
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise data_error(path, "the file is empty; expected one JSON object per line with 'question' and 'answer'")
    parsed = []
    for number, line in numbered:
        try:
            parsed.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            parsed.append((number, RowSkip("bad json", f"{e.msg} at column {e.colno}: {line[:80]}")))
    if all(isinstance(value, RowSkip) for _, value in parsed):
        first_number, first_line = numbered[0]
        raise data_error(path, f"not JSONL: no line is valid JSON (first: {first_line[:60]!r})", row=first_number)
    return parsed


def strip_calculator_annotations(text: str) -> str:
    """"48/2 = <<48/2=24>>24" -> "48/2 = 24": the annotations are GSM8K's tool calls, not prose."""
    return _CALCULATOR.sub("", text)


def parse_gsm8k_record(record) -> tuple[str, str, str]:
    """(question, solution, normalised final answer) from one JSON object, or RowSkip."""
    if not isinstance(record, dict):
        raise RowSkip("not an object", f"expected a JSON object, got {type(record).__name__}")
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise RowSkip("missing field", f"'{name}' is missing or empty")
    question, worked = record["question"].strip(), record["answer"]
    final = extract_hash_answer(worked)
    if final is None:
        raise RowSkip("no final answer", f"'answer' has no '#### n' line: ...{worked[-60:]!r}")
    answer = normalise_number(final)
    if answer is None:
        raise RowSkip("final answer not a number", f"'#### {final}'")
    solution = strip_calculator_annotations(worked.rsplit("####", 1)[0]).strip()
    return question, solution, answer


def gsm8k_prompt(question: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """The chat prompt for one question: the format instruction, then the question."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": question}]


def target_format_answer(solution: str, answer: str) -> str:
    """A worked solution in the layout rewards.SYSTEM_PROMPT asks for (strict_format_reward scores it 1.0)."""
    return f"<reasoning>\n{solution.strip()}\n</reasoning>\n<answer>\n{answer.strip()}\n</answer>"


def worked_solution_conversations(prompts: Dataset) -> Dataset:
    """SFT rows from load_gsm8k's rows: the same prompt, answered by the gold solution in the target format.

    A row without a worked solution (only "#### n") would teach an empty <reasoning>: it raises instead.
    """
    rows = []
    for row in prompts:
        if not row["solution"].strip():
            raise DataError(f"{row['source']}: no worked solution before '####' to write into <reasoning>")
        reply = {"role": "assistant", "content": target_format_answer(row["solution"], row["answer"])}
        rows.append({"messages": [*row["prompt"], reply], "source": row["source"]})
    return Dataset.from_list(rows)


def prompt_token_count(tokenizer, prompt: list[dict]) -> int:
    """Tokens the model sees for this prompt: chat template plus the assistant's turn header."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    # The template already holds the special tokens; adding them again would overcount.
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def load_gsm8k(path_or_name, split_file: str = "train.jsonl", limit: int | None = None,
               system_prompt: str | None = SYSTEM_PROMPT, tokenizer=None, max_prompt_length: int | None = None,
               report: SkipReport | None = None, encoding: str | None = None) -> Dataset:
    """Load GSM8K-style JSONL as GRPO prompts (schema in the module docstring).

    limit: keep at most this many rows (reading stops once it is reached).
    system_prompt: the format instruction (None: no system message; rewards.SYSTEM_PROMPT_ZH for Chinese).
    tokenizer + max_prompt_length: skip prompts longer than that many tokens.
    report: a SkipReport to fill with the skipped rows; without one, skips are logged.
    encoding: None detects it (UTF-8/16, GB18030/GBK, Big5: lab_utils.core.text_decoding).
    """
    if max_prompt_length is not None and tokenizer is None:
        raise ValueError("max_prompt_length needs a tokenizer to count the prompt's tokens")
    path = resolve_gsm8k_file(path_or_name, split_file)
    own_report = report if report is not None else SkipReport()
    rows = []
    for number, record in read_jsonl(path, encoding):
        if limit is not None and len(rows) >= limit:
            break
        source = f"{path.name}:{number}"
        try:
            if isinstance(record, RowSkip):
                raise record
            question, solution, answer = parse_gsm8k_record(record)
            prompt = gsm8k_prompt(question, system_prompt)
            if max_prompt_length is not None:
                n_tokens = prompt_token_count(tokenizer, prompt)
                if n_tokens > max_prompt_length:
                    raise RowSkip("prompt too long", f"{n_tokens} tokens > max_prompt_length {max_prompt_length}")
        except RowSkip as skip:
            own_report.skip(source, number, skip.reason, skip.detail)
            continue
        rows.append({"prompt": prompt, "answer": answer, "solution": solution, "source": source})
    own_report.kept += len(rows)
    if not rows:
        raise data_error(path, f"no usable rows ({own_report.summary()}); expected JSON objects with "
                               "'question' and an 'answer' ending in '#### <number>'")
    if own_report.skipped and report is None:
        log.warning("%s: %s", path.name, own_report.summary())
    return Dataset.from_list(rows)
