"""``visionpool proxy``: spread requests over the pool's workers.

Usage:
    visionpool proxy [--host HOST] [--port PORT] [--registry local|consul] ...   (or python -m visionpool.proxy)
"""

from __future__ import annotations

import argparse
import os

from visionpool.client.commands import Command
from visionpool.client.options import add_arguments, from_args

from .settings import ProxySettings


def run(args: argparse.Namespace) -> int:
    from .server import serve

    settings = from_args(ProxySettings, args, os.environ)
    settings.configure_logging()
    return serve(settings)


COMMAND = Command(
    "proxy",
    "spread requests over the pool's workers",
    "Forward uploads round-robin to healthy workers; hand out workers (p2p).",
    lambda parser: add_arguments(parser, ProxySettings),
    run,
)
