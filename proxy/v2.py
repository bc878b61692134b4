"""The Open Inference Protocol (KServe v2) through the proxy.

Usage (the app factory adds them):
    app.add_routes(routes(door))

Inference and everything about a model (metadata, readiness, config) go to a worker that
serves the model, with the same buffering, retries and ejection as /predict; the server's
own health and metadata are the pool's. gRPC is not proxied: ``/lookup`` hands out a
worker's gRPC address for p2p clients (see the README).
"""

from __future__ import annotations

from importlib.metadata import version as package_version

from aiohttp import web

from visionpool.client.wire import (
    V2,
    V2_EXTENSIONS,
    V2_INFER,
    V2_LIVE,
    V2_MODEL,
    V2_MODEL_CONFIG,
    V2_MODEL_READY,
    V2_READY,
    V2_VERSION,
)

from .auth import signer
from .errors import NoWorker
from .state import DOOR, FORWARDER, POOL

MODEL, VERSION = V2 + V2_MODEL, V2 + V2_VERSION


def routes(door: object) -> list[web.RouteDef]:
    """The v2 routes; ``door`` is the app's FrontDoor (its expect handler refuses oversized bodies)."""
    expect = door.expect  # type: ignore[attr-defined]
    model_routes = [
        web.get(base + suffix, forward) for base in (MODEL, VERSION) for suffix in ("", V2_MODEL_READY, V2_MODEL_CONFIG)
    ]
    return [
        web.get(V2, server_metadata),
        web.get(V2 + V2_LIVE, live),
        web.get(V2 + V2_READY, ready),
        *model_routes,
        web.post(MODEL + V2_INFER, forward, expect_handler=expect),
        web.post(VERSION + V2_INFER, forward, expect_handler=expect),
    ]


async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        {"name": "visionpool", "version": package_version("visionpool"), "extensions": V2_EXTENSIONS}
    )


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    if not request.app[POOL].healthy():
        raise NoWorker("No worker is registered yet.")
    return web.json_response({"ready": True})


async def forward(request: web.Request) -> web.Response:
    """To a worker serving the model in the path, the request's own path and query kept."""
    name = request.match_info["name"]
    async with request.app[DOOR].body(request) as body:
        return await request.app[FORWARDER].forward(
            request, body, request.rel_url.raw_path, name, signer(request, name)
        )
