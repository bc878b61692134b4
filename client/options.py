"""Settings dataclasses as command-line flags and ``VISIONPOOL_*`` environment variables.

Usage:
    add_settings_arguments(parser, WorkerSettings)
    settings = settings_from_args(WorkerSettings, args, os.environ)

Precedence: flag, then environment variable, then the dataclass default. Each
field's flag is ``--field-name`` (or its ``flag`` metadata), its variable the
flag in capitals (``--model-repository``: ``VISIONPOOL_MODEL_REPOSITORY``), and
the comment above each field becomes its help text.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import typing
from collections.abc import Mapping
from typing import Any

PREFIX = "VISIONPOOL_"


def _comments(cls: type) -> dict[str, str]:
    """The ``# comment`` line written above each field."""
    source = inspect.getsource(cls)
    found, pending = {}, ""
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending = stripped.lstrip("# ")
        elif (match := re.match(r"(\w+)\s*:", stripped)) and pending:
            found[match.group(1)] = pending
            pending = ""
    return found


def _field_type(cls: type, field: dataclasses.Field[Any]) -> Any:
    if "type" in field.metadata:
        return field.metadata["type"]
    hint = typing.get_type_hints(cls)[field.name]
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return typing.get_args(hint)[0]
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _flag(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("flag", "--" + field.name.replace("_", "-")))


def _env(field: dataclasses.Field[Any]) -> str:
    """``--model-repository`` -> ``VISIONPOOL_MODEL_REPOSITORY`` (unless the field names its own)."""
    if "env" in field.metadata:
        return PREFIX + str(field.metadata["env"])
    return PREFIX + _flag(field).lstrip("-").replace("-", "_").upper()


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the settings dataclass ``cls``."""
    helps = _comments(cls)
    for field in dataclasses.fields(cls):
        flag = _flag(field)
        kind = _field_type(cls, field)
        env = _env(field)
        text = f"{helps.get(field.name, '')} [env {env}]"
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(
                flag,
                dest=field.name,
                type=kind,
                nargs=field.metadata.get("nargs"),
                default=None,
                help=text,
                metavar=field.metadata.get("metavar", field.name.upper()),
            )


def settings_from_args(cls: type, args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """The settings: flags over environment variables over defaults; ValueError on a bad value."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None)
        env = _env(field)
        if value is None and environ.get(env, "") != "":
            value = _parse_env(cls, field, environ[env], env)
        if value is not None:
            values[field.name] = value
    return cls(**values)


def _parse_env(cls: type, field: dataclasses.Field[Any], raw: str, env: str) -> Any:
    kind = _field_type(cls, field)
    try:
        if field.metadata.get("nargs"):
            return [kind(part.strip()) for part in raw.split(",") if part.strip()]
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(ast.literal_eval(raw)) if kind in (int, float) else kind(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"{env}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from None
