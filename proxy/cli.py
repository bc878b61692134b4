"""``visionpool proxy``: spread requests over the pool's workers.

Usage:
    visionpool proxy [--host HOST] [--port PORT] [--registry local|consul] ...   (or python -m visionpool.proxy)
"""

from __future__ import annotations

from visionpool.serving.commands import service

from .settings import ProxySettings


def run(settings: ProxySettings) -> int:
    from .server import serve  # aiohttp and uvloop load only when a proxy really starts

    return serve(settings)


COMMAND = service(
    "proxy",
    "spread requests over the pool's workers",
    "Forward uploads round-robin to healthy workers; hand out workers (p2p).",
    ProxySettings,
    run,
)
