"""The client's commands: ``visionpool predict``, ``visionpool lookup`` and ``visionpool workers``.

Usage:
    visionpool predict PATH... [--url URL] [--p2p|--proxy] [--model NAME] [--out FILE] [--draw DIR] ...
    visionpool lookup [--url URL] [--model NAME]
    visionpool workers [--url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionpool.serving.commands import Command
from visionpool.serving.options import configure_logging


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """--url, --model and --timeout: what every command that talks to a pool takes."""
    default_url = os.environ.get("VISIONPOOL_URL", "http://127.0.0.1:8080")
    parser.add_argument("--url", default=default_url, help=f"the proxy's URL [env VISIONPOOL_URL; {default_url}]")
    parser.add_argument("--model", default=None, help="model name (default: the workers' default model)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, or - for paths on stdin")
    add_client_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--p2p", dest="mode", action="store_const", const="p2p", help="post straight to workers (default)"
    )
    mode.add_argument("--proxy", dest="mode", action="store_const", const="proxy", help="post through the proxy")
    parser.set_defaults(mode="p2p")
    parser.add_argument(
        "--protocol",
        choices=("predict", "v2"),
        default="predict",
        help="our /predict JSON (default), or the Open Inference Protocol (v2; needs --model)",
    )
    parser.add_argument("--threshold", type=float, default=None, help="minimum score (0..1)")
    parser.add_argument("--top-k", type=int, default=None, help="at most this many predictions per image")
    parser.add_argument("--concurrency", type=int, default=8, help="images in flight at once (default 8)")
    parser.add_argument("--retries", type=int, default=3, help="retries per image on retryable failures")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines file; a re-run skips what it holds")
    parser.add_argument("--draw", type=Path, default=None, help="write annotated copies into this folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def _predict(args: argparse.Namespace) -> int:
    from .batch import Journal, collect, run
    from .sync import Client

    configure_logging("WARNING")
    images = list(collect(args.paths, sys.stdin))
    if args.protocol == "v2" and not args.model:
        raise ValueError("--protocol v2 names the model in the URL: pass --model")
    client = Client(
        args.url, mode=args.mode, model=args.model, timeout=args.timeout, retries=args.retries, protocol=args.protocol
    )
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


def _ask_proxy(name: str, args: argparse.Namespace, ask: Callable[[Any], Any]) -> int:
    """Print the proxy's JSON answer; exit 1 with the error when the pool refuses or cannot be reached."""
    from .errors import ClientError
    from .sync import Client

    try:
        with Client(args.url, retries=0, timeout=args.timeout) as client:
            print(json.dumps(ask(client), indent=2))
    except ClientError as error:
        print(f"visionpool {name}: {error}", file=sys.stderr)
        return 1
    return 0


PREDICT = Command(
    "predict",
    "run images through the pool",
    "Predict image files, folders (recursive) or paths read from stdin ('-').",
    _predict_arguments,
    _predict,
)
LOOKUP = Command(
    "lookup",
    "print the worker the proxy would hand out",
    "Print the worker the proxy would hand out.",
    add_client_arguments,
    lambda args: _ask_proxy("lookup", args, lambda client: client.lookup(args.model)),
)
WORKERS = Command(
    "workers",
    "list the proxy's healthy workers",
    "List the proxy's healthy workers.",
    add_client_arguments,
    lambda args: _ask_proxy("workers", args, lambda client: {"workers": client.workers()}),
)
