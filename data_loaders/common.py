"""What every loader shares: the chat-messages schema, clear errors, the skip report.

The schema every text loader returns (a `datasets.Dataset`):

    messages: list of {"role": "system"|"user"|"assistant", "content": str}
              the conversation; the last message is the assistant's answer
    source:   str  "<file name>:<row number>" the row came from (1-based, header = row 1 for CSV)
    ...       loader-specific metadata columns (e.g. department), documented per loader

Rows that cannot be used are never dropped silently: each is recorded in a
`SkipReport` with its file, row, reason and a short detail, which the caller
shows and writes to the run directory as CSV.
"""

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# DataError (one line: file, row, field, what was expected) is a lab-wide error: the shared text
# decoder in lab_utils.core raises it too. Re-exported here for the loaders.
from lab_utils.core.errors import DataError, data_error  # noqa: F401

ROLES = ("system", "user", "assistant")


class RowSkip(ValueError):
    """Raised inside a loader for one unusable row: a short stable reason plus detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class SkipReport:
    """Rows a loader did not use, and why."""

    skipped: list = field(default_factory=list)  # dicts: source, row, reason, detail
    kept: int = 0
    resized: int = 0  # images a loader shrank to its size bounds (vision loaders)

    def skip(self, source, row, reason: str, detail: str = "") -> None:
        self.skipped.append({"source": str(source), "row": row, "reason": reason, "detail": str(detail)[:200]})

    def counts(self) -> dict:
        return dict(Counter(s["reason"] for s in self.skipped))

    def summary(self) -> str:
        resized = f", {self.resized} image(s) resized to fit" if self.resized else ""
        if not self.skipped:
            return f"kept {self.kept} rows, skipped none{resized}"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        return f"kept {self.kept} rows, skipped {len(self.skipped)} ({parts}){resized}"

    def write_csv(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["source", "row", "reason", "detail"])
            writer.writeheader()
            writer.writerows(self.skipped)
        return path

    def merge(self, other: "SkipReport") -> "SkipReport":
        return SkipReport(self.skipped + other.skipped, self.kept + other.kept, self.resized + other.resized)


def build_messages(user: str, assistant: str, system: str | None = None) -> list[dict]:
    """One single-turn conversation in the lab's schema."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def with_system_prompt(messages: list[dict], system: str | None) -> list[dict]:
    """Put `system` first unless the conversation already has its own system message."""
    if not system or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}] + messages


def kept_rows(rows: list[dict], report: SkipReport, path, none_usable: str, expected: str):
    """(Dataset, SkipReport) of a loader's kept rows; none at all is one DataError:
    "<none_usable> (<skip counts>); <expected>"."""
    from datasets import Dataset

    report.kept = len(rows)
    if not rows:
        raise data_error(path, f"{none_usable} ({report.summary()}); {expected}")
    return Dataset.from_list(rows), report


def rows_left(dataset, path, after: str, fix: str):
    """The dataset when rows are left after a filter; none left is one DataError naming the file."""
    if len(dataset) == 0:
        raise data_error(path, f"no usable row left after {after}; {fix}")
    return dataset


def split_heldout(dataset, heldout_rows: int, seed: int, path):
    """(train, held-out) rows: a seeded split that always leaves rows to train on (0 = nothing held out)."""
    if len(dataset) <= heldout_rows:
        raise data_error(path, f"{len(dataset)} usable rows but {heldout_rows} to hold out; "
                         "hold out fewer so some rows are left to train on")
    if heldout_rows == 0:
        return dataset, dataset.select([])
    split = dataset.train_test_split(test_size=heldout_rows, seed=seed)
    return split["train"], split["test"]
