"""Instruction-tuning files -> the lab's chat-messages schema.

Accepted files: JSON (a list of objects) or JSONL (one object per line). Each
row may be in any of three common formats, detected per row:

    alpaca    {"instruction": ..., "input": ... (optional, may be empty/null), "output": ...}
    messages  {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}  (OpenAI)
    sharegpt  {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}

Every row becomes (see data_loaders/common.py):

    messages  list of {"role", "content"}; ends with an assistant turn
    source    "<file>:<row>" (row = 1-based position in the file)

The file may be in any encoding lab_utils.core.text_decoding detects (UTF-8 with or
without BOM, UTF-16, GB18030/GBK, Big5), or the one `encoding=` names.

A row that cannot be used (missing answer, empty text, unknown roles, no final
assistant turn) is recorded in the SkipReport with its reason; a file that is
not JSON/JSONL at all is one DataError naming the file and line.
"""

import json
from pathlib import Path

from data_loaders.common import RowSkip, SkipReport, build_messages, data_error, kept_rows, with_system_prompt
from lab_utils.core.text_decoding import read_text
from lab_utils.core.paths import find_data_file

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


def read_records(path: Path, encoding: str | None = None) -> list:
    """Parse a JSON list or JSONL file, in any encoding read_text detects, into (row_number, record)."""
    text, _ = read_text(path, encoding, expected="a JSON list or JSON lines")
    if not text.strip():
        raise data_error(path, "file is empty; expected a JSON list or JSON lines")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise data_error(path, f"not valid JSON ({err.msg})", row=f"line {err.lineno}") from None
        return list(enumerate(records, start=1))
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise data_error(path, f"not valid JSON lines ({err.msg})", row=number) from None
    return rows


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def alpaca_messages(record: dict) -> list[dict]:
    instruction = _text(record.get("instruction"))
    extra, output = _text(record.get("input")), _text(record.get("output"))
    if not instruction:
        raise RowSkip("empty instruction")
    if not output:
        raise RowSkip("empty output", "field 'output' is empty or missing")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return build_messages(user, output)


def openai_messages(record: dict) -> list[dict]:
    messages = []
    for turn in record["messages"]:
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant"):
            raise RowSkip("unknown role", f"{str(turn)[:60]!r}; expected role system/user/assistant")
        messages.append({"role": turn["role"], "content": _text(turn.get("content"))})
    return messages


def sharegpt_messages(record: dict) -> list[dict]:
    messages = []
    for turn in record["conversations"]:
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower()) if isinstance(turn, dict) else None
        if role is None:
            raise RowSkip("unknown role", f"{str(turn)[:60]!r}; expected from=human/gpt/system")
        messages.append({"role": role, "content": _text(turn.get("value"))})
    return messages


def row_messages(record) -> list[dict]:
    """Detect the row's format and convert it; RowSkip says why a row is unusable."""
    if not isinstance(record, dict):
        raise RowSkip("not an object", f"got {type(record).__name__}")
    if "messages" in record:
        messages = openai_messages(record)
    elif "conversations" in record:
        messages = sharegpt_messages(record)
    elif "instruction" in record or "output" in record:
        messages = alpaca_messages(record)
    else:
        raise RowSkip("unknown format",
                      f"fields {sorted(record)}; expected instruction/output, messages or conversations")
    if not messages or messages[-1]["role"] != "assistant":
        raise RowSkip("no final assistant turn")
    if any(not m["content"] for m in messages):
        raise RowSkip("empty turn")
    if not any(m["role"] == "user" for m in messages):
        raise RowSkip("no user turn")
    return messages


def load_chat_file(name: str, system_prompt: str | None = None, limit: int | None = None,
                   encoding: str | None = None):
    """Load an alpaca / messages / ShareGPT file. Returns (Dataset, SkipReport).

    encoding: None detects it (UTF-8/16 with or without BOM, GB18030/GBK, Big5: lab_utils.core.text_decoding).
    """
    path = find_data_file(name)
    report = SkipReport()
    rows = []
    for number, record in read_records(path, encoding):
        try:
            messages = row_messages(record)
        except RowSkip as err:
            report.skip(path.name, number, err.reason, err.detail)
            continue
        rows.append({"messages": with_system_prompt(messages, system_prompt), "source": f"{path.name}:{number}"})
        if limit and len(rows) >= limit:
            break
    return kept_rows(rows, report, path, "no usable rows", "expected alpaca, messages or ShareGPT rows")
