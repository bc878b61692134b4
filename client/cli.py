"""The ``visionpool`` command line.

Usage:
    visionpool worker [--model NAME ...] [--model-repository DIR] [--host HOST] [--port PORT] [--registry ...]
    visionpool proxy [--host HOST] [--port PORT] [--registry local|consul] ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .options import add_settings_arguments, settings_from_args


def _worker(args: argparse.Namespace) -> int:
    from visionpool.worker.repository import ConfigError
    from visionpool.worker.server import serve
    from visionpool.worker.settings import WorkerSettings

    try:
        settings = settings_from_args(WorkerSettings, args, os.environ)
        _configure_logging(settings.log_level)
        if settings.supervise:
            from visionpool.worker.supervisor import Supervisor

            return Supervisor([*args.argv, "--no-supervise"]).serve()
        return serve(settings)
    except (ConfigError, ValueError, OSError) as error:
        print(f"visionpool worker: {error}", file=sys.stderr)
        return 2


def _proxy(args: argparse.Namespace) -> int:
    from visionpool.proxy.server import serve
    from visionpool.proxy.settings import ProxySettings

    try:
        settings = settings_from_args(ProxySettings, args, os.environ)
        _configure_logging(settings.log_level)
        return serve(settings)
    except (ValueError, OSError) as error:
        print(f"visionpool proxy: {error}", file=sys.stderr)
        return 2


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_parser() -> argparse.ArgumentParser:
    from visionpool.proxy.settings import ProxySettings
    from visionpool.worker.settings import WorkerSettings

    parser = argparse.ArgumentParser(
        prog="visionpool", description="A horizontally scaled pool of image-model workers."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    services = [
        (
            "worker",
            WorkerSettings,
            _worker,
            "serve image models over HTTP",
            "Serve image models over HTTP: POST an image to /predict.",
        ),
        (
            "proxy",
            ProxySettings,
            _proxy,
            "spread requests over the pool's workers",
            "Forward uploads round-robin to healthy workers; hand out workers (p2p).",
        ),
    ]
    for name, settings, run, summary, description in services:
        command = commands.add_parser(name, help=summary, description=description)
        add_settings_arguments(command, settings)
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionpool`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
