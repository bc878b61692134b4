"""The ``visionpool`` command line.

Usage:
    visionpool worker [--model NAME ...] [--model-repository DIR] [--host HOST] [--port PORT] [--registry ...]
    visionpool proxy [--host HOST] [--port PORT] [--registry local|consul] ...
    visionpool predict PATH... [--url URL] [--p2p|--proxy] [--model NAME] [--out FILE] [--draw DIR] ...
    visionpool lookup [--url URL] [--model NAME]
    visionpool workers [--url URL]
    visionpool bench [--url URL] [--model NAME] [--model-repository DIR] [--concurrency 1,4,16,64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import bench_cli
from .options import add_settings_arguments, settings_from_args


def _worker(args: argparse.Namespace) -> int:
    from visionpool.worker.repository import ConfigError
    from visionpool.worker.server import serve
    from visionpool.worker.settings import WorkerSettings

    try:
        settings = settings_from_args(WorkerSettings, args, os.environ)
        _configure_logging(settings.log_level, settings.log_format)
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
        _configure_logging(settings.log_level, settings.log_format)
        return serve(settings)
    except (ValueError, OSError) as error:
        print(f"visionpool proxy: {error}", file=sys.stderr)
        return 2


def _predict(args: argparse.Namespace) -> int:
    from .batch import Journal, collect, run
    from .sync import Client

    _configure_logging("WARNING")
    images = list(collect(args.paths, sys.stdin))
    try:
        client = Client(args.url, mode=args.mode, model=args.model, timeout=args.timeout, retries=args.retries)
    except ValueError as error:
        print(f"visionpool predict: {error}", file=sys.stderr)
        return 2
    journal = Journal(args.out)
    try:
        with client:
            summary = run(
                client,
                images,
                journal=journal,
                draw=args.draw,
                concurrency=args.concurrency,
                quiet=args.quiet,
                threshold=args.threshold,
                top_k=args.top_k,
            )
    finally:
        journal.close()
    if not args.quiet:
        print(summary.text(), file=sys.stderr)
    return 1 if summary.failures else 0


def _lookup(args: argparse.Namespace) -> int:
    return _ask_proxy(args, lambda client: client.lookup(args.model))


def _workers(args: argparse.Namespace) -> int:
    return _ask_proxy(args, lambda client: {"workers": client.workers()})


def _ask_proxy(args: argparse.Namespace, ask: Callable[[Any], Any]) -> int:
    from .errors import ClientError
    from .sync import Client

    try:
        with Client(args.url, retries=0, timeout=args.timeout) as client:
            print(json.dumps(ask(client), indent=2))
    except ClientError as error:
        print(f"visionpool {args.command}: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # a URL that is not one
        print(f"visionpool {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


def _add_client_arguments(parser: argparse.ArgumentParser) -> None:
    default_url = os.environ.get("VISIONPOOL_URL", "http://127.0.0.1:8080")
    parser.add_argument("--url", default=default_url, help=f"the proxy's URL [env VISIONPOOL_URL; {default_url}]")
    parser.add_argument("--model", default=None, help="model name (default: the workers' default model)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")


def _add_client_commands(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="run images through the pool",
        description="Predict image files, folders (recursive) or paths read from stdin ('-').",
    )
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, or - for paths on stdin")
    _add_client_arguments(predict)
    mode = predict.add_mutually_exclusive_group()
    mode.add_argument(
        "--p2p", dest="mode", action="store_const", const="p2p", help="post straight to workers (default)"
    )
    mode.add_argument("--proxy", dest="mode", action="store_const", const="proxy", help="post through the proxy")
    predict.set_defaults(mode="p2p", run=_predict)
    predict.add_argument("--threshold", type=float, default=None, help="minimum score (0..1)")
    predict.add_argument("--top-k", type=int, default=None, help="at most this many predictions per image")
    predict.add_argument("--concurrency", type=int, default=8, help="images in flight at once (default 8)")
    predict.add_argument("--retries", type=int, default=3, help="retries per image on retryable failures")
    predict.add_argument("--out", type=Path, default=None, help="JSON lines file; a re-run skips what it holds")
    predict.add_argument("--draw", type=Path, default=None, help="write annotated copies into this folder")
    predict.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    bench = commands.add_parser(
        "bench",
        help="measure the pool against the engine's own limit",
        description="Measure the engine limit, one worker, the proxy and p2p mode.",
    )
    bench_cli.add_arguments(bench)
    bench.set_defaults(run=bench_cli.run)
    for name, run, summary in (
        ("lookup", _lookup, "print the worker the proxy would hand out"),
        ("workers", _workers, "list the proxy's healthy workers"),
    ):
        command = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        _add_client_arguments(command)
        command.set_defaults(run=run)


def _configure_logging(level: str, fmt: str = "plain") -> None:
    """Log lines to stderr: plain text, or one JSON object per line with every record's extra fields."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


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
    _add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionpool`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
