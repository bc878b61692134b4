"""The settings layer every ``visionpool`` command is built on: dataclass fields as flags and environment.

Usage:
    @dataclass
    class Settings:
        port: int = option(8000, "Port to listen on.")
    add_arguments(parser, Settings)                    # --port, with its help and [env VISIONPOOL_PORT]
    settings = from_args(Settings, args, os.environ)   # flag, then environment, then default
    environ = to_environ(settings)                     # the same settings as VISIONPOOL_* variables

Each field declares its help, flag and environment name as data beside it (``option``).
The flag is ``--field-name`` unless given; the variable is the flag in capitals with the
``VISIONPOOL_`` prefix (``--model-repository``: ``VISIONPOOL_MODEL_REPOSITORY``); a
``scoped`` field also takes the class's ``ENV_SCOPE`` (the proxy's ``VISIONPOOL_PROXY_PORT``),
so a proxy and its workers can share one environment. Lists are comma-separated in the
environment.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping
from typing import Any

PREFIX = "VISIONPOOL_"
_MISSING: Any = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    default_factory: Callable[[], Any] = _MISSING,
    flag: str | None = None,
    env: str | None = None,
    scoped: bool = False,
    nargs: str | None = None,
    metavar: str | None = None,
    kind: type | None = None,
    secret: bool = False,
    positional: bool = False,
    choices: tuple[Any, ...] | None = None,
    shortcuts: Mapping[str, Any] | None = None,
    no_env: bool = False,
) -> Any:
    """A settings field with its command-line and environment form declared beside it. ``positional``: an
    argument, not a flag; ``shortcuts``: extra flags that each set one value (``--p2p`` for ``--mode p2p``);
    ``no_env``: no environment variable (a command's own choice, which another command's variable must not set)."""
    if not help:
        raise ValueError("every option needs a help text")
    metadata = {
        "help": help,
        "flag": flag,
        "env": env,
        "scoped": scoped,
        "nargs": nargs,
        "metavar": metavar,
        "kind": kind,
        "secret": secret,
        "positional": positional,
        "choices": choices,
        "shortcuts": dict(shortcuts or {}),
        "no_env": no_env or positional,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def flag_of(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("flag") or "--" + field.name.replace("_", "-"))


def env_of(cls: type, field: dataclasses.Field[Any]) -> str:
    """The field's environment variable, e.g. VISIONPOOL_MODEL_REPOSITORY."""
    name = field.metadata.get("env") or flag_of(field).lstrip("-").replace("-", "_").upper()
    scope = getattr(cls, "ENV_SCOPE", "") if field.metadata.get("scoped") else ""
    return PREFIX + scope + name


def kind_of(cls: type, field: dataclasses.Field[Any]) -> Any:
    """The type one flag value is parsed to: the element type of a list, the type inside an Optional."""
    if field.metadata.get("kind"):
        return field.metadata["kind"]
    hint = typing.get_type_hints(cls)[field.name]
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return typing.get_args(hint)[0]
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the settings dataclass ``cls``, each with its help and variable."""
    for field in dataclasses.fields(cls):
        kind = kind_of(cls, field)
        env = "" if field.metadata.get("no_env") else f"env {env_of(cls, field)}"
        text = field.metadata["help"] + (f" [{'; '.join(p for p in (env, _default_text(field)) if p)}]" if env or
                                         _default_text(field) else "")  # fmt: skip
        if field.metadata.get("positional"):
            parser.add_argument(field.name, type=kind, nargs=field.metadata.get("nargs"), help=text,
                                metavar=field.metadata.get("metavar") or field.name.upper())  # fmt: skip
            continue
        for shortcut, value in field.metadata.get("shortcuts", {}).items():
            parser.add_argument(
                shortcut,
                dest=field.name,
                action="store_const",
                const=value,
                help=f"Same as --{field.name.replace('_', '-')} {value}.",
            )
        if kind is bool:
            action: Any = argparse.BooleanOptionalAction
            parser.add_argument(flag_of(field), dest=field.name, action=action, default=None, help=text)
            continue
        parser.add_argument(
            flag_of(field),
            dest=field.name,
            type=kind,
            nargs=field.metadata.get("nargs"),
            default=None,
            choices=field.metadata.get("choices"),
            help=text,
            metavar=field.metadata.get("metavar") or field.name.upper(),
        )


def from_args(cls: type, args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """The settings: flags over environment variables over defaults; ValueError on a bad value."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None)
        env = env_of(cls, field)
        if value is None and not field.metadata.get("no_env") and environ.get(env, "") != "":
            value = _parse_env(cls, field, environ[env], env)
        if value is not None:
            values[field.name] = value
    return cls(**values)


def to_environ(settings: Any) -> dict[str, str]:
    """The settings as the variables ``from_args`` reads back (None fields are left out)."""
    cls = type(settings)
    environ = {}
    for field in dataclasses.fields(cls):
        value = getattr(settings, field.name)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        environ[env_of(cls, field)] = str(value)
    return environ


def _default_text(field: dataclasses.Field[Any]) -> str:
    if field.metadata.get("secret") or field.default in (dataclasses.MISSING, None, False):
        return ""
    return f"default {field.default}"


def _parse_env(cls: type, field: dataclasses.Field[Any], raw: str, env: str) -> Any:
    kind = kind_of(cls, field)
    try:
        if field.metadata.get("nargs"):
            return [kind(part.strip()) for part in raw.split(",") if part.strip()]
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(ast.literal_eval(raw)) if kind in (int, float) else kind(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"{env}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def configure_logging(level: str = "INFO", fmt: str = "plain") -> None:
    """Log lines to stderr: plain text, or one JSON object per line with every record's extra fields."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def log_fields(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """One INFO line of ``key=value`` pairs; with --log-format json, each pair is a field of its own."""
    logger.info(" ".join(f"{key}=%s" for key in fields), *fields.values(), extra=fields)
