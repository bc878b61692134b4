"""Who may use the pool: API keys at the proxy, and the tickets it signs for workers (p2p, and its own
forwarded requests) when the pool has a secret.

Usage (the app factory does this):
    middlewares.append(api_key_middleware)          # with --api-keys: 401, 403, 429 before the body is read
    app.cleanup_ctx.append(watch_keys)              # the keys read again when they change (file or Consul KV)
    forward(..., ticket=signer(request, model))     # with --pool-secret-file: a ticket per worker tried
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from visionpool.client import wire
from visionpool.discovery.kv import ConsulKV
from visionpool.serving.settings import kv_key
from visionpool.serving.tickets import issue

from .keys import parse
from .state import KEYS, SECRET, SETTINGS

logger = logging.getLogger(__name__)

# what a key is asked for: the pool's work; health, metrics, the page's files and the registry's routes (its own
# token) stay open
GUARDED = (wire.PREDICT, "/models/", wire.LOOKUP, wire.WORKERS, wire.POOL, wire.V2)
OPEN_RATE = 1e6  # requests/s a ticket of an open pool (no keys) carries: no limit worth the name
FORWARD_TTL = 30.0  # seconds a ticket on a forwarded request is good for (it is used at once)
KEYS_POLL = 0.5  # seconds between looks at the key file: a revoked key stops within a second


@web.middleware
async def api_key_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse a request without a valid key before its body is read: 401, 403 for a model it may not use, 429."""
    if request.path.startswith(GUARDED):
        model = request.match_info.get("name") or request.query.get("model")
        request["api_key"] = request.app[KEYS].admit(request.headers.get("Authorization"), model)
    return await handler(request)


async def watch_keys(app: web.Application) -> AsyncIterator[None]:
    """Read the keys again whenever they change: a file every half second, a KV key as Consul tells of a change.
    Keys that break keep the ones read before in force, and are logged."""
    ring = app[KEYS]

    async def watch_file() -> None:
        while True:
            await asyncio.sleep(KEYS_POLL)
            try:
                if ring.reload():
                    logger.info("API keys read again from %s: %d keys", ring.where, len(ring.grants))
            except (OSError, ValueError) as error:
                logger.error("API keys: %s; the keys read before stay in force", error)

    async def watch_kv(key: str) -> None:
        settings = app[SETTINGS]
        while True:  # a watch that fails must not leave the keys unwatched: log it and watch again
            try:
                async for value in ConsulKV(settings.consul_url, settings.consul_token).watch(key):
                    take(value, key, settings.consul_url)
            except Exception:
                logger.exception("API keys: watching %s failed; the keys read before stay in force, again in 1 s",
                                 ring.where)  # fmt: skip
                await asyncio.sleep(1.0)

    def take(value: bytes | None, key: str, consul_url: str) -> None:
        if value is None:  # no keys at all: every request is refused, as the store says
            ring.load({})
            logger.error("API keys: consul at %s has no key %s: every request is refused until it has "
                         "(visionpool keys add NAME --file %s)", consul_url, key, ring.where)  # fmt: skip
            return
        try:
            ring.load(parse(value, str(ring.where)))
            logger.info("API keys read from %s: %d keys", ring.where, len(ring.grants))
        except ValueError as error:
            logger.error("API keys: %s; the keys read before stay in force", error)

    key = kv_key(ring.where)
    task = asyncio.create_task(watch_file() if key is None else watch_kv(key), name="watch-api-keys")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def signer(request: web.Request, model: str | None) -> Callable[[str], str] | None:
    """How the proxy signs its own forwarded request for a worker, in a pool whose workers want tickets."""
    if SECRET not in request.app:
        return None
    return lambda worker_id: ticket_for(request, model, worker_id, FORWARD_TTL)


def ticket_for(request: web.Request, model: str | None, worker_id: str, ttl: float) -> str:
    """A ticket for this request's key (none: the open pool's) to send ``model`` requests to one worker."""
    grant = request.app[KEYS].grant_named(request.get("api_key")) if KEYS in request.app else None
    return issue(
        request.app[SECRET],
        key=grant.name if grant else "",
        model=model,
        worker=worker_id,
        ttl=ttl,
        rate=grant.rate if grant else OPEN_RATE,
        burst=grant.burst if grant else OPEN_RATE,
    )
