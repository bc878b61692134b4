"""The ``visionpool`` command: a thin dispatcher over subcommands that each package defines for itself.

Usage:
    visionpool COMMAND [options]          (COMMAND: worker, import, proxy, predict, lookup, workers, bench, chaos)
    python -m visionpool.worker [options] (the same as ``visionpool worker``)

Each package declares its commands as ``Command`` objects under the ``visionpool.commands``
entry-point group in pyproject.toml, so this dispatcher names none of them and the client
imports nothing from the worker or the proxy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from .options import add_arguments, from_args

GROUP = "visionpool.commands"


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, what it does, its flags and what runs it."""

    name: str
    summary: str  # one line, for ``visionpool --help``
    description: str  # for ``visionpool NAME --help``
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    settings: type | None = None  # the settings dataclass its options come from

    def invoke(self, args: argparse.Namespace) -> int:
        """Run it; a bad setting or an OS error is one clean line and exit code 2, never a traceback."""
        try:
            return int(self.run(args))
        except (ValueError, OSError) as error:
            print(f"visionpool {self.name}: {error}", file=sys.stderr)
            return 2

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Run it as a program of its own (``python -m visionpool.worker``)."""
        parser = argparse.ArgumentParser(prog=f"python -m visionpool.{self.name}", description=self.description)
        self.add_arguments(parser)
        return self.invoke(parser.parse_args(argv))


def service(name: str, summary: str, description: str, settings: type, serve: Callable[[Any], int]) -> Command:
    """A command that runs a service: its settings from flags and environment, its logging, then ``serve``."""

    def run(args: argparse.Namespace) -> int:
        resolved = from_args(settings, args, os.environ)
        resolved.configure_logging()
        return serve(resolved)

    return Command(name, summary, description, lambda parser: add_arguments(parser, settings), run, settings)


def command(name: str, summary: str, description: str, settings: type, run: Callable[[Any], int]) -> Command:
    """A command whose options are the fields of the ``settings`` dataclass (help, flags and environment as
    data, as for the services); ``run`` gets the settings built from them."""
    return Command(
        name, summary, description, lambda parser: add_arguments(parser, settings),
        lambda args: run(from_args(settings, args, os.environ)), settings,
    )  # fmt: skip


def installed() -> list[Command]:
    """Every command the installed packages declare, by name."""
    return [entry.load() for entry in entry_points(group=GROUP)]


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionpool", description="A horizontally scaled pool of image-model workers."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.summary, description=command.description)
        command.add_arguments(sub)
        sub.set_defaults(invoke=command.invoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionpool`` console script."""
    args = build_parser(installed()).parse_args(argv)
    return int(args.invoke(args))
