"""``visionpool worker``: serve image models over HTTP.

Usage:
    visionpool worker [--model NAME ...] [--model-repository DIR] [--port PORT] [--registry ...]
    python -m visionpool.worker ...      (the same)
"""

from __future__ import annotations

import argparse
import os

from visionpool.client.commands import Command
from visionpool.client.options import add_arguments, from_args

from .settings import WorkerSettings


def run(args: argparse.Namespace) -> int:
    settings = from_args(WorkerSettings, args, os.environ)
    settings.configure_logging()
    if settings.supervise:
        from .supervisor import Supervisor

        return Supervisor(settings).serve()
    from .server import serve

    return serve(settings)


COMMAND = Command(
    "worker",
    "serve image models over HTTP",
    "Serve image models over HTTP: POST an image to /predict.",
    lambda parser: add_arguments(parser, WorkerSettings),
    run,
)
