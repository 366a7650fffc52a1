"""Preference data -> TRL's conversational schemas: pairs (DPO, ORPO, SimPO) or unpaired rows (KTO).

Accepted files: JSON (a list of objects) or JSONL (one object per line), in any encoding the
lab's shared decoder detects (lab_utils.core.text_decoding: UTF-8 with or without a BOM, UTF-16,
GB18030/GBK, Big5) or the one `encoding=` names. A file holds pairs or unpaired rows: its first
object decides (a `label` and a `completion` field = unpaired). Pairs may be in any of three common
layouts, detected per row:

    pairs         {"prompt": ..., "chosen": ..., "rejected": ...}
                  prompt: a string or a list of messages; chosen/rejected: a string, one
                  {"role": "assistant", "content"} message, or a list holding one (TRL's layouts)
    ultrafeedback {"prompt": "...", "chosen": [user..., assistant], "rejected": [user..., assistant]}
                  (HuggingFaceH4/ultrafeedback_binarized): each side is the whole conversation;
                  the two must share every turn but the last
    sharegpt      {"conversations": [{"from": "human", "value": ...}, ...],
                   "chosen": {"from": "gpt", "value": ...}, "rejected": {"from": "gpt", "value": ...}}
                  (LLaMA-Factory's ShareGPT preference layout)

Every row becomes (the chat schema of data_loaders/common.py, split the way TRL's DPO/ORPO
trainers read it):

    prompt    list of {"role", "content"}: optional system turn, ..., ends with a user turn
    chosen    [{"role": "assistant", "content": the preferred answer}]
    rejected  [{"role": "assistant", "content": the other answer}]
    source    "<file>:<row>" (row = 1-based position in the file)

Unpaired rows (KTO's layout: one answer with a thumbs-up or thumbs-down, the feedback people collect):

    unpaired      {"prompt": ..., "completion": ..., "label": true | false}
                  prompt and completion as in pairs; label: a JSON boolean (true = desirable)

become prompt / completion ([one assistant turn]) / label (bool) / source. `unpair` turns pairs into
that layout: each pair -> its chosen answer labelled true and its rejected answer labelled false.

A row that cannot be used (a missing or empty answer, two identical answers, an unknown
role, a prompt that does not end with a user turn, UltraFeedback sides with different
prompts, a label that is not a boolean, a row of the other layout than the file's) is recorded
in the SkipReport with its reason; a file that is not JSON/JSONL, or in no plausible encoding,
is one DataError naming the file and line.
"""


from data_loaders.alpaca import SHAREGPT_ROLES, read_records
from data_loaders.common import ROLES, RowSkip, SkipReport, kept_rows, with_system_prompt
from lab_utils.core.paths import find_data_file


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def message(turn) -> dict:
    """One {"role", "content"} turn from an OpenAI-style or ShareGPT-style dict."""
    if isinstance(turn, dict) and "role" in turn:
        role = turn["role"]
        content = turn.get("content")
    elif isinstance(turn, dict) and "from" in turn:
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        content = turn.get("value")
    else:
        role = content = None
    if role not in ROLES:
        raise RowSkip(
            "unknown role", f"{str(turn)[:60]!r}; expected role system/user/assistant or from human/gpt/system"
        )
    return {"role": role, "content": _text(content)}


def prompt_messages(value, field_name: str = "prompt") -> list[dict]:
    """A prompt given as a string (one user turn) or as a list of turns ending with a user turn."""
    if isinstance(value, str):
        messages = [{"role": "user", "content": value.strip()}]
    elif isinstance(value, list):
        messages = [message(turn) for turn in value]
    else:
        raise RowSkip("missing prompt", f"field '{field_name}' is {type(value).__name__}; expected text or messages")
    if not messages or messages[-1]["role"] != "user":
        raise RowSkip("prompt does not end with a user turn")
    return messages


def answer(value, field_name: str) -> list[dict]:
    """One assistant answer given as a string, a message, or a list holding one message."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        turn = {"role": "assistant", "content": value.strip()}
    elif isinstance(value, dict):
        turn = message(value)
    else:
        raise RowSkip("missing answer", f"field '{field_name}' is {type(value).__name__}; expected text or one message")
    if turn["role"] != "assistant":
        raise RowSkip("answer is not an assistant turn", f"field '{field_name}' has role {turn['role']}")
    if not turn["content"]:
        raise RowSkip("empty answer", f"field '{field_name}' is empty")
    return [turn]


def is_whole_conversation(value) -> bool:
    """UltraFeedback's sides: a list of several turns (the prompt included), not a single answer."""
    return isinstance(value, list) and len(value) > 1


def ultrafeedback_pair(record: dict) -> tuple[list, list, list]:
    chosen = [message(turn) for turn in record["chosen"]]
    rejected = [message(turn) for turn in record["rejected"]] if isinstance(record["rejected"], list) else []
    if chosen[:-1] != rejected[:-1]:
        raise RowSkip("prompts differ", "'chosen' and 'rejected' must share every turn but the last")
    return prompt_messages(chosen[:-1], "chosen"), answer(chosen[-1], "chosen"), answer(rejected[-1], "rejected")


def row_pair(record) -> tuple[list, list, list]:
    """(prompt, chosen, rejected) of one row, whatever its layout; RowSkip says why a row is unusable."""
    if not isinstance(record, dict):
        raise RowSkip("not an object", f"got {type(record).__name__}")
    missing = [name for name in ("chosen", "rejected") if name not in record]
    if missing:
        raise RowSkip("missing answer", f"no field {missing[0]!r}; fields {sorted(record)}")
    if is_whole_conversation(record["chosen"]):
        prompt, chosen, rejected = ultrafeedback_pair(record)
    elif "conversations" in record:
        prompt = prompt_messages(record["conversations"], "conversations")
        chosen, rejected = answer(record["chosen"], "chosen"), answer(record["rejected"], "rejected")
    elif "prompt" in record:
        prompt = prompt_messages(record["prompt"])
        chosen, rejected = answer(record["chosen"], "chosen"), answer(record["rejected"], "rejected")
    else:
        raise RowSkip("missing prompt", f"fields {sorted(record)}; expected prompt or conversations")
    if any(not m["content"] for m in prompt):
        raise RowSkip("empty turn", "the prompt has an empty message")
    if chosen[0]["content"] == rejected[0]["content"]:
        raise RowSkip("identical answers", "chosen and rejected are the same text: nothing to prefer")
    return prompt, chosen, rejected


def row_unpaired(record) -> tuple[list, list, bool]:
    """(prompt, completion, label) of one unpaired row; RowSkip says why a row is unusable."""
    if not isinstance(record, dict):
        raise RowSkip("not an object", f"got {type(record).__name__}")
    missing = [name for name in ("prompt", "completion", "label") if name not in record]
    if missing:
        raise RowSkip("not an unpaired row", f"no field {missing[0]!r}; fields {sorted(record)}")
    if not isinstance(record["label"], bool):
        raise RowSkip("label is not a boolean", f"label is {record['label']!r}; expected true or false")
    prompt = prompt_messages(record["prompt"])
    if any(not m["content"] for m in prompt):
        raise RowSkip("empty turn", "the prompt has an empty message")
    return prompt, answer(record["completion"], "completion"), record["label"]


def is_unpaired(record) -> bool:
    return isinstance(record, dict) and "label" in record and "completion" in record


def load_preference_file(
    name: str, system_prompt: str | None = None, limit: int | None = None, encoding: str | None = None
):
    """Load a preference file: pairs (pairs / UltraFeedback / ShareGPT layouts) or unpaired rows, as its
    first object says (`is_unpaired`). Returns (Dataset, SkipReport); `"label" in dataset.column_names`
    tells the two apart."""
    path = find_data_file(name)
    report = SkipReport()
    records = read_records(path, encoding)
    unpaired = bool(records) and is_unpaired(records[0][1])
    rows = []
    for number, record in records:
        try:
            if unpaired:
                prompt, completion, label = row_unpaired(record)
                row = {"completion": completion, "label": label}
            elif is_unpaired(record):
                raise RowSkip("unpaired row in a file of pairs", "the first row decides the file's layout")
            else:
                prompt, chosen, rejected = row_pair(record)
                row = {"chosen": chosen, "rejected": rejected}
        except RowSkip as err:
            report.skip(path.name, number, err.reason, err.detail)
            continue
        rows.append({"prompt": with_system_prompt(prompt, system_prompt), **row, "source": f"{path.name}:{number}"})
        if limit and len(rows) >= limit:
            break
    return kept_rows(
        rows,
        report,
        path,
        f"no usable {'unpaired rows' if unpaired else 'preference pairs'}",
        "expected rows with prompt/completion/label (unpaired) or prompt/chosen/rejected, "
        "UltraFeedback conversations or ShareGPT conversations (pairs)",
    )


def unpair(pairs):
    """Pairs -> unpaired rows (KTO): each pair's chosen answer labelled true, then its rejected one false."""
    from datasets import Dataset

    rows = [
        {"prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen", "source": pair["source"]}
        for pair in pairs
        for side in ("chosen", "rejected")
    ]
    columns = ("prompt", "completion", "label", "source")
    return Dataset.from_list(rows) if rows else Dataset.from_dict({name: [] for name in columns})
