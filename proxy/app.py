"""The proxy's aiohttp application: routing, p2p lookup, the registry it follows, and the pool's page.

Usage:
    app = create_app(ProxySettings(), create_registry(settings, "proxy"))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from visionpool.client import links, wire
from visionpool.client.wire import Header
from visionpool.discovery import Directory
from visionpool.discovery.kv import load_secret
from visionpool.serving.frontdoor import FrontDoor, Limits, error_middleware
from visionpool.serving.page import page_file
from visionpool.serving.tickets import TICKET_TTL
from visionpool.serving.tls import client_context

from .auth import api_key_middleware, signer, ticket_for, watch_keys
from .errors import NoWorker, no_worker
from .forward import Forwarder
from .keys import KeyRing
from .metrics import ProxyMetrics
from .pool import Pool
from .settings import ProxySettings
from .state import DOOR, FORWARDER, KEYS, METRICS, POOL, REGISTRY, SECRET, SETTINGS, VIEW
from .v2 import routes as v2_routes
from .view import PoolView

logger = logging.getLogger(__name__)

# Idle connections to workers are dropped sooner than workers drop them (their header_timeout, 10 s by
# default), so the proxy never sends a request down a connection the worker is closing.
UPSTREAM_KEEPALIVE = 5.0


def create_app(settings: ProxySettings, registry: Directory) -> web.Application:
    """The proxy app following ``registry``, serving the registry's own routes if it has any."""
    pool = Pool(settings.eject_seconds)
    door = FrontDoor(Limits.of(settings))
    metrics = ProxyMetrics(pool, door)
    middlewares = [request_id_middleware, metrics.middleware, error_middleware]
    if settings.api_keys is not None:
        middlewares.append(api_key_middleware)  # inside error_middleware: its refusals are JSON like any other
    app = web.Application(middlewares=middlewares, **door.app_options())
    app[SETTINGS], app[REGISTRY], app[POOL], app[METRICS], app[DOOR] = settings, registry, pool, metrics, door
    app.cleanup_ctx.extend([client_session, follow_registry])
    if settings.api_keys is not None:
        app[KEYS] = KeyRing(settings.api_keys)
        app.cleanup_ctx.append(watch_keys)
    if settings.pool_secret_file is not None:
        app[SECRET] = load_secret(settings.pool_secret_file, settings.consul_url, settings.consul_token)
    app.add_routes(
        [
            web.post(wire.PREDICT, predict, expect_handler=door.expect),
            web.post(wire.MODEL_PREDICT, predict, expect_handler=door.expect),
            web.get(wire.LOOKUP, lookup),
            web.get(wire.WORKERS, workers),
            web.get(wire.HEALTHZ, healthz),
            web.get(wire.READYZ, readyz),
            web.get(wire.METRICS, metrics.handle_metrics),
            web.get(wire.PROMETHEUS_TARGETS, prometheus_targets),
            web.get(wire.PAGE, page),
            web.get(wire.PAGE_ASSET, page),
            web.get(wire.POOL, pool_view),
            *v2_routes(door),
            *registry.routes(),
        ]
    )
    return app


async def client_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled ClientSession for every upstream call, closed at shutdown."""
    settings = app[SETTINGS]
    timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout, sock_connect=settings.connect_timeout)
    # socket_factory: a worker whose link died is seen in seconds, and its requests go to another (links.py)
    # https workers verified against --tls-ca (the system's CAs without it); the proxy presents its own certificate
    # to them when it has one (for workers that ask for a client certificate)
    tls = client_context(settings.tls_ca, settings.tls_cert, settings.tls_key) if settings.tls_ca else True
    connector = aiohttp.TCPConnector(
        limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE, socket_factory=links.socket_factory, ssl=tls
    )
    # A proxy keeps no cookies: what one client's worker answer set must never reach the next client.
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=jar) as session:
        app[FORWARDER] = Forwarder(app[POOL], session, settings.retries, timeout, app[METRICS])
        app[VIEW] = PoolView(app[POOL], session)
        yield


async def follow_registry(app: web.Application) -> AsyncIterator[None]:
    """Keep the pool equal to the registry's healthy set, in the background."""

    async def follow() -> None:
        while True:  # a registry backend that fails must not freeze the pool: log it and follow again
            try:
                async for instances in app[REGISTRY].watch():
                    app[POOL].update(instances)
            except Exception:
                logger.exception("following the registry failed; starting again in 1 s")
                await asyncio.sleep(1.0)

    task = asyncio.create_task(follow(), name="follow-registry")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Accept or make an X-Request-ID, and send it back on every answer, errors included."""
    request_id = request.headers.get(Header.REQUEST_ID) or uuid.uuid4().hex
    if Header.REQUEST_ID not in request.headers:
        request = request.clone(headers={**request.headers, Header.REQUEST_ID: request_id})
    try:
        response = await handler(request)
    except web.HTTPException as error:
        error.headers[Header.REQUEST_ID] = request_id
        raise
    response.headers[Header.REQUEST_ID] = request_id
    return response


async def predict(request: web.Request) -> web.Response:
    name = request.match_info.get("name")
    async with request.app[DOOR].body(request) as body:
        return await request.app[FORWARDER].forward(request, body, wire.predict_path(name), name, signer(request, name))


async def lookup(request: web.Request) -> web.Response:
    """p2p mode: the next worker in the rotation, for the client to post to directly."""
    model = request.query.get("model") or None
    worker = request.app[POOL].pick(model)
    if worker is None:
        raise no_worker(model, request.app[POOL].served())
    request.app[METRICS].lookups.labels(request.app[METRICS].model_label(model)).inc()
    answer = {"url": worker.url, "worker_id": worker.id, "model": model, "grpc": worker.grpc}
    if SECRET in request.app:  # the worker serves ticket holders only: this client is one, for TICKET_TTL
        answer["ticket"] = ticket_for(request, model, worker.id, TICKET_TTL)
        answer["ticket_expires_in"] = TICKET_TTL
    return web.json_response(answer)


async def workers(request: web.Request) -> web.Response:
    healthy = request.app[POOL].healthy()
    return web.json_response({"workers": [i.as_json() for i in healthy]})


async def prometheus_targets(request: web.Request) -> web.Response:
    """The healthy workers in Prometheus' HTTP service-discovery format, for its http_sd_configs."""
    targets = [
        {"targets": [urlsplit(i.url).netloc], "labels": {"worker": i.id, "models": ",".join(sorted(i.models))}}
        for i in request.app[POOL].healthy()
    ]
    return web.json_response(targets)


async def page(request: web.Request) -> web.Response:
    """The page (at /) or one of its files (/ui/NAME); its policy lets it reach the registered workers (p2p)."""
    workers = (instance.url for instance in request.app[POOL].instances.values())
    body, headers = page_file(request.match_info.get("name"), workers)
    return web.Response(body=body, headers=headers)


async def pool_view(request: web.Request) -> web.Response:
    """The pool as the page shows it: every worker's state and last minute, and the models."""
    return web.json_response(await request.app[VIEW].read())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    count = len(request.app[POOL].healthy())
    if not count:
        raise NoWorker("No worker is registered yet.")
    return web.json_response({"status": "ready", "workers": count})
