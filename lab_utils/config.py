"""Params dataclass <-> flat YAML config <-> command line, the same for every script.

    python -m scripts.sft_alpaca --config configs/sft_alpaca.yaml --max_steps 5 --lora_r 8

A config is a flat YAML mapping whose keys are Params field names; the same
file is what `papermill -f` feeds a notebook's parameters cell. Unknown keys
are an error (a typo must not silently fall back to a default).
"""

import argparse
import dataclasses
import json
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


def _parse_value(text: str, kind):
    """Turn a command-line string into the field's type (YAML syntax for lists/None/bools)."""
    value = yaml.safe_load(text)
    base = [a for a in typing.get_args(kind) if a is not type(None)]
    target = base[0] if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union else kind
    if value is None or target in (list, dict) or typing.get_origin(target) in (list, dict):
        return value
    if target is str:
        return text
    if target is float and isinstance(value, int):
        return float(value)
    return value


def make_params(params_cls, config: str | None = None, overrides: dict | None = None):
    """Params from defaults < YAML config < explicit overrides."""
    values = {}
    if config:
        values.update(load_yaml(config))
        check_keys(params_cls, values, str(config))
    if overrides:
        check_keys(params_cls, overrides, "overrides")
        values.update(overrides)
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
        name: _parse_value(getattr(args, name), kind)
        for name, kind in kinds.items()
        if getattr(args, name) is not None
    }
    try:
        return make_params(params_cls, args.config, overrides)
    except ConfigError as err:
        parser.error(str(err))


def save_params(params, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(dataclasses.asdict(params), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def params_from(params_cls, namespace: dict):
    """Params from a notebook's globals (its parameters cell, after papermill's injection)."""
    return params_cls(**{f.name: namespace[f.name] for f in dataclasses.fields(params_cls) if f.name in namespace})
