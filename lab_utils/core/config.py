"""Params dataclass <-> flat YAML config <-> command line, the same for every script.

    python -m scripts.sft_alpaca --config configs/sft_alpaca.yaml --max_steps 5 --lora_r 8

A config is a flat YAML mapping whose keys are Params field names; the same
file is what `papermill -f` feeds a notebook's parameters cell. Unknown keys
are an error (a typo must not silently fall back to a default).
"""

import argparse
import dataclasses
import json
import os
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override that does not match the experiment's Params."""


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
    return params_cls(**values)


def parse_args(params_cls, argv=None, description: str = ""):
    """--config FILE plus one --<field> VALUE option per Params field."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="flat YAML file of parameters (the same one papermill -f takes)")
    kinds = field_types(params_cls)
    for name, kind in kinds.items():
        parser.add_argument(f"--{name}", dest=name, default=None, metavar=str(getattr(kind, "__name__", kind)))
    args = parser.parse_args(argv)
    overrides = {
        name: _from_command_line(getattr(args, name), kind)
        for name, kind in kinds.items()
        if getattr(args, name) is not None
    }
    try:
        return make_params(params_cls, args.config, overrides)
    except ConfigError as err:
        parser.error(str(err))


def save_params(params, path) -> Path:
    path = Path(path)
    from lab_utils.core.secrets import redact  # a credential given as a parameter is never written

    path.write_text(json.dumps(redact(dataclasses.asdict(params)), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def params_from(params_cls, namespace: dict):
    """Params from a notebook's globals (its parameters cell, after papermill's injection)."""
    return params_cls(**{f.name: namespace[f.name] for f in dataclasses.fields(params_cls) if f.name in namespace})


# The lab's own errors (DataError, LabPathError, ModelNotFound, ConfigError, ExportError, the GPU guards...)
# subclass these; so do a missing file and an unreachable hub model. LAB_DEBUG=1 shows the traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError)


def run_cli(run, params_cls, argv=None, description: str = ""):
    """A script's main(): Params from --config and --key value, then run(p); bad input is one line, no traceback."""
    p = parse_args(params_cls, argv, description=description)
    try:
        return run(p)
    except USER_ERRORS as err:
        if os.environ.get("LAB_DEBUG"):
            raise
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise SystemExit(f"error: {first_line}  [{type(err).__name__}; LAB_DEBUG=1 shows the traceback]") from None
