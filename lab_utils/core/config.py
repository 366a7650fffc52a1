"""Params dataclass <-> flat YAML config <-> command line, the same for every script.

    python -m scripts.sft_alpaca --config configs/sft_alpaca.yaml --max_steps 5 --lora_r 8
    python -m scripts.sft_alpaca --help            # every knob: its help, type and default
    python -m scripts.sft_alpaca --print_config    # every knob as a commented YAML: a starting config

A config is a flat YAML mapping whose keys are Params field names; the same
file is what `papermill -f` feeds a notebook's parameters cell. Unknown keys
are an error (a typo must not silently fall back to a default).

A knob's help text is written once, as the comment on its line in the Params dataclass
(or, where the line has none, the comment block right above it); `field_help` reads it
from the source. `--help`, `--print_config` and the notebooks' parameters cells
(scripts/notebook_params.py) all show that text, so it cannot drift.

Why the lab's own parser and not transformers' HfArgumentParser or TRL's TrlParser (which adds
--config to it)? Checked with transformers 5.17 / trl 1.14 on these Params: HfArgumentParser
cannot even be built for a bare `list` field (AttributeError: no `__args__`; evaluate_export,
the teach_* scripts), gives a `dict` field no command-line form ("invalid dict value"),
leaves a YAML `1e-4` as the string '1e-4' in a float field (parse_yaml_file does no
coercion), and takes lists as `--reward_names a b` where our YAML-typed `[a, b]` becomes the
one string '[a, b]'. TrlParser coerces YAML through argparse and refuses unknown keys, but sits
on the same builder (same list/dict failures) and imports TRL into scripts that need none.
Both also want help in `field(metadata={"help": ...})`, which would make every dataclass
harder to read than a trailing comment.
"""

import argparse
import errno
import ast
import dataclasses
import functools
import inspect
import io
import json
import os
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path

import yaml

from lab_utils.core.errors import ConfigError, DataError, LabError
from lab_utils.core.knob_checks import check_knob_values
from lab_utils.core.text_decoding import read_text


def load_yaml(path) -> dict:
    """A flat YAML mapping, in any encoding the shared decoder reads (a GBK config from Windows Notepad
    works); a syntax error is one line with the file, line, column and the parser's reason."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        text, _ = read_text(path, expected="a YAML config")
    except DataError as err:
        raise ConfigError(f"config {err}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = err.problem or err.context or "not valid YAML"
        tab = " (YAML indents with spaces, not tabs)" if "\t" in reason or "'\\t'" in reason else ""
        raise ConfigError(f"{path}{where}: {reason}{tab}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a flat mapping of parameter names to values")
    return data


def field_types(params_cls) -> dict:
    hints = typing.get_type_hints(params_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(params_cls)}


def check_keys(params_cls, values: dict, origin: str) -> None:
    known = field_types(params_cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{origin}: unknown parameter(s) {unknown}; known: {sorted(known)}")


def coerce(name: str, value, kind, origin: str):
    """Give a value its field's type. YAML reads `1e-4` as a string (it wants `1.0e-4`),
    and the command line gives strings: both are accepted where the meaning is plain."""
    base = [a for a in typing.get_args(kind) if a is not type(None)]
    if base and (isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union):
        if value is None:
            return None
        kind = base[0]
    if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{origin}: {name} must be a number, got {value!r}") from None
    if kind is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{origin}: {name} must be a whole number, got {value!r}") from None
    if kind is str and value is not None and not isinstance(value, str):
        return str(value)
    return value


def _from_command_line(text: str, kind):
    """A command-line string -> a value (YAML syntax for lists, bools and None; strings stay as typed)."""
    return text if kind is str else yaml.safe_load(text)


def make_params(params_cls, config: str | None = None, overrides: dict | None = None):
    """Params from defaults < YAML config < explicit overrides."""
    kinds = field_types(params_cls)
    values = {}
    for origin, given in ((str(config), load_yaml(config) if config else {}), ("overrides", overrides or {})):
        check_keys(params_cls, given, origin)
        values.update({k: coerce(k, v, kinds[k], origin) for k, v in given.items()})
    return check_knob_values(params_cls(**values))


# ---- help text: one source, the comments in the Params source ----

@functools.cache
def _class_comments(cls) -> dict:
    """field name -> its comment in `cls`'s own source: the trailing `# ...` on the field's line(s),
    else the block of comment lines directly above it. Fields without either are left out."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in a notebook or an interactive session: no source file
        return {}
    trailing, whole_line = {}, {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            is_whole_line = not token.line[: token.start[1]].strip()
            (whole_line if is_whole_line else trailing)[token.start[0]] = text
    comments = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        on_line = [trailing[n] for n in range(node.lineno, node.end_lineno + 1) if n in trailing]
        above, line = [], node.lineno - 1
        while line in whole_line:
            above.insert(0, whole_line[line])
            line -= 1
        text = on_line[0] if on_line else " ".join(above)
        if text:
            comments[node.target.id] = text
    return comments


def field_help(params_cls) -> dict:
    """Every field's help text ("" where none is written). The first class in the MRO that declares
    the field with a comment gives it, so the shared groups' help serves every experiment, and an
    experiment that redeclares a field to change its default keeps that help unless it says more."""
    found = {}
    for cls in params_cls.__mro__:
        if dataclasses.is_dataclass(cls):
            for name, text in _class_comments(cls).items():
                found.setdefault(name, text)
    return {f.name: found.get(f.name, "") for f in dataclasses.fields(params_cls)}


def defaults(params_cls) -> dict:
    """Every field's default value (default_factory called)."""
    return {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(params_cls)}


# The shared groups (lab_utils/training/params.py) carry a `knob_section` title; their knobs are shown
# under it in this order, after the experiment's own (data and method) knobs. `model` leads: it is the
# knob changed most.
SECTION_ORDER = ("LoRA", "optimisation", "evaluation", "run")
LEADING = ("model",)


def knob_sections(params_cls) -> list[tuple[str | None, list[str]]]:
    """[(section title or None, field names)] in the order --print_config and the notebooks show them."""
    origin = {}
    for cls in reversed(params_cls.__mro__):  # the class that first declared a field owns it
        for name in inspect.get_annotations(cls):
            origin.setdefault(name, cls.__dict__.get("knob_section"))
    names = [f.name for f in dataclasses.fields(params_cls)]
    own = [n for n in LEADING if n in names] + [n for n in names if n not in LEADING and not origin.get(n)]
    titles = sorted({origin[n] for n in names if origin.get(n)},
                    key=lambda t: SECTION_ORDER.index(t) if t in SECTION_ORDER else len(SECTION_ORDER))
    if not titles:
        return [(None, names)]
    shared = [(t, [n for n in names if n not in LEADING and origin.get(n) == t]) for t in titles]
    return [("model, data and method", own), *shared]


def type_name(kind) -> str:
    return kind.__name__ if isinstance(kind, type) and not typing.get_args(kind) else str(kind).replace("typing.", "")


def _yaml_line(name: str, value) -> str:
    """`name: value` on one line (a multi-line string as a JSON-quoted scalar, which YAML reads back)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=float("inf"))
    text = text.removesuffix("\n").removesuffix("\n...")  # a scalar document ends with "..."
    if "\n" in text:
        text = json.dumps(value, ensure_ascii=False)
    return f"{name}: {text}"


def config_yaml(params, title: str = "") -> str:
    """Every knob of `params` as a flat YAML, each with its help as a comment: a config to start from."""
    helps, values = field_help(type(params)), dataclasses.asdict(params)
    lines = [f"# {line}" for line in title.splitlines() if line.strip()]
    for section, names in knob_sections(type(params)):
        lines += [""] + ([f"# --- {section}"] if section else [])
        lines += [f"{_yaml_line(n, values[n])}  # {helps[n]}".rstrip(" #") for n in names]
    return "\n".join(lines).lstrip("\n") + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the whole usage block (--help shows that)
        self.exit(2, f"error: {message} (--help lists every option)\n")


def parse_args(params_cls, argv=None, description: str = ""):
    """--config FILE plus one --<field> VALUE option per Params field, each with its help, type and default;
    --print_config prints the resulting knobs as a commented YAML and exits."""
    parser = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="flat YAML file of parameters (the same one papermill -f takes)")
    parser.add_argument("--print_config", action="store_true",
                        help="print every knob (after --config and the options given) as a commented YAML and exit")
    kinds, helps, values = field_types(params_cls), field_help(params_cls), defaults(params_cls)
    for section, names in knob_sections(params_cls):
        group = parser.add_argument_group(section) if section else parser
        for name in names:
            shown = json.dumps(values[name], ensure_ascii=False) if not isinstance(values[name], bool) else values[name]
            text = f"{helps[name]} (default: {shown})".strip().replace("%", "%%")
            group.add_argument(f"--{name}", dest=name, default=None, metavar=type_name(kinds[name]), help=text)
    args = parser.parse_args(argv)
    overrides = {
        name: _from_command_line(getattr(args, name), kind)
        for name, kind in kinds.items()
        if getattr(args, name) is not None
    }
    try:
        p = make_params(params_cls, args.config, overrides)
    except LabError as err:  # one line, no usage block: the message says what to fix
        parser.exit(2, f"error: {err}\n")
    if args.print_config:
        print(config_yaml(p, f"{parser.prog}: every knob, with its help. Edit, then: --config FILE"), end="")
        raise SystemExit(0)
    return p


def save_params(params, path) -> Path:
    path = Path(path)
    from lab_utils.core.secrets import redact  # a credential given as a parameter is never written

    path.write_text(json.dumps(redact(dataclasses.asdict(params)), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def params_from(params_cls, namespace: dict):
    """Params from a notebook's globals (its parameters cell, after papermill's injection)."""
    given = {f.name: namespace[f.name] for f in dataclasses.fields(params_cls) if f.name in namespace}
    return check_knob_values(params_cls(**given))


# ---- errors: the user's input is one line, anything else keeps its traceback ----

# What run_cli shows as one line: the lab's own errors and a missing file. A torch shape mismatch,
# a TRL bug or any other exception is not the user's input: its traceback is what fixes it.
USER_ERRORS = (LabError, FileNotFoundError)
# What lowers memory, in the order to try; the ones an experiment's Params has are named.
MEMORY_KNOBS = (("batch_size", "lower"), ("max_seq_length", "lower"), ("max_pixels", "lower"),
                ("max_image_side", "lower"), ("gradient_checkpointing", "set true"), ("load_in_4bit", "set true"))


def out_of_memory(err: BaseException) -> str | None:
    """'GPU' or 'CPU' when `err` is an out-of-memory error, else None."""
    torch = sys.modules.get("torch")  # never import torch here: teaching scripts run without it
    if torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return "GPU"
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err)):
        return "CPU"  # torch's "DefaultCPUAllocator: can't allocate memory" is a plain RuntimeError
    return None


def machine_fault(err: BaseException) -> str | None:
    """One line for a full disk or a folder the lab may not write to (the machine's state, not a bug)."""
    if not isinstance(err, OSError):
        return None
    where = f" ({err.filename})" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return f"no space left on the disk{where}: free some, or point LAB_OUTPUT_DIR at a bigger disk"
    if isinstance(err, PermissionError):
        return f"permission denied{where}: point LAB_OUTPUT_DIR (or LAB_HOME) at a folder you can write to"
    return None


def memory_hint(p, where: str) -> str:
    """One line naming the knobs of `p` that lower memory, with their values now."""
    lower = [f"{k} (now {getattr(p, k)})" for k, how in MEMORY_KNOBS if how == "lower" and hasattr(p, k)]
    turn_on = [k for k, how in MEMORY_KNOBS if how == "set true" and getattr(p, k, True) is False]
    if where != "GPU" and "load_in_4bit" in turn_on:
        turn_on.remove("load_in_4bit")  # 4-bit weights need a CUDA GPU
    advice = "; ".join(filter(None, [f"lower {', '.join(lower)}" if lower else "",
                                     f"set {' and '.join(turn_on)} to true" if turn_on else ""]))
    return f"out of memory on the {where}: {advice or 'use a smaller input'}"


def run_cli(run, params_cls, argv=None, description: str = ""):
    """A script's main(): Params from --config and --key value, then run(p). The user's input (a LabError,
    a missing file, a bad config) and out-of-memory are one line; anything else keeps its traceback."""
    p = parse_args(params_cls, argv, description=description)
    try:
        return run(p)
    except (*USER_ERRORS, MemoryError, RuntimeError, OSError) as err:
        where = out_of_memory(err)
        machine = machine_fault(err)
        if os.environ.get("LAB_DEBUG") or (where is None and machine is None and not isinstance(err, USER_ERRORS)):
            raise
        first_line = memory_hint(p, where) if where else machine or (str(err).strip().splitlines() or [""])[0]
        raise SystemExit(f"error: {first_line}  [{type(err).__name__}; LAB_DEBUG=1 shows the traceback]") from None
