"""The lab's own errors: one base class, so a script can tell the user's input from a bug.

A LabError is something the user can fix — a file, a value, a setting this machine cannot
honour — and its message says what, in one line: `run_cli` prints just that line. Anything
else (a torch shape mismatch, a bug in TRL) is not the user's input and keeps its traceback.

Each class also keeps the builtin base it always had (ValueError, FileNotFoundError,
RuntimeError...), so callers' `except ValueError` and tests' `pytest.raises(ValueError)` still match.
Other rooms define their own subclasses next to the code that raises them (LabPathError in
core.paths, ModelNotFound in models.registry, ChatTemplateError in models.chat, ExportError in
export.merge, ...); the ones shared across rooms live here.
"""

from pathlib import Path


class LabError(Exception):
    """Input or a setting the lab cannot use; the message is one line saying what to change."""


class ConfigError(LabError, ValueError):
    """A config file or override that does not match the experiment's Params."""


class ParamError(LabError, ValueError):
    """A Params value that cannot work (checked before a run starts): names the knob and what it accepts."""


class MachineError(LabError, RuntimeError):
    """A setting this machine cannot honour: no CUDA GPU, a package not installed, a backend already loaded."""


class RunExistsError(LabError, FileExistsError):
    """A finished run or export would be overwritten and the user did not ask for it."""


class DataError(LabError, ValueError):
    """Input the lab cannot use. The message is one line: file, row, field, what was expected."""


def data_error(path, message: str, row=None, field_name=None) -> DataError:
    where = str(Path(path).name) if path is not None else "<data>"
    if row is not None:
        where += f", row {row}"
    if field_name is not None:
        where += f", field '{field_name}'"
    return DataError(f"{where}: {message}")
