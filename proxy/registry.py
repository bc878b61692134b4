"""The embedded (local) registry: workers register with the proxy itself over HTTP.

Usage (the proxy app does this for --registry local):
    registry = EmbeddedRegistry(token)
    app.add_routes(registry.routes())

    PUT    /registry/instances/<id>   {"url": ..., "models": {...}, "ttl": 10}   register or renew
    DELETE /registry/instances/<id>                                              deregister
    GET    /registry/instances                                                   list

Each call needs ``Authorization: Bearer <token>``; anything else is refused with
401 and logged. An instance that is not renewed within its TTL disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from visionpool.discovery import Instance, Registry

from .errors import json_error

logger = logging.getLogger(__name__)
MAX_TTL = 3600.0


class EmbeddedRegistry(Registry):
    """Instances with an expiry time, held in the proxy's memory."""

    def __init__(self, token: str, default_ttl: float = 10.0) -> None:
        self.token = token
        self.default_ttl = default_ttl
        self.instances: dict[str, tuple[Instance, float]] = {}  # id -> (instance, expires at)
        self._changed = asyncio.Event()

    def register(self, instance: Instance, ttl: float | None = None) -> None:
        known = self.instances.get(instance.id)
        self.instances[instance.id] = (instance, time.monotonic() + (ttl or self.default_ttl))
        if known is None or known[0] != instance:
            self._changed.set()

    def deregister(self, instance: Instance) -> None:
        if self.instances.pop(instance.id, None) is not None:
            self._changed.set()

    def expire(self) -> list[str]:
        """Drop the instances whose TTL ran out; their ids."""
        now = time.monotonic()
        gone = [i for i, (_, expires) in self.instances.items() if expires <= now]
        for instance_id in gone:
            logger.warning("worker %s stopped renewing its registration; dropped", instance_id)
            del self.instances[instance_id]
        if gone:
            self._changed.set()
        return gone

    def healthy(self) -> list[Instance]:
        return [instance for instance, _ in self.instances.values()]

    async def watch(self) -> AsyncIterator[list[Instance]]:
        """The instances now and after every change, expiring stale ones as time passes."""
        while True:
            self._changed.clear()
            self.expire()
            yield self.healthy()
            soonest = min((expires for _, expires in self.instances.values()), default=time.monotonic() + 1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(soonest - time.monotonic(), 0.0) + 0.01)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.put("/registry/instances/{id}", self.handle_put),
            web.delete("/registry/instances/{id}", self.handle_delete),
            web.get("/registry/instances", self.handle_list),
        ]

    def authorize(self, request: web.Request) -> None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            logger.warning(
                "registry request refused: missing or wrong token from %s (%s %s)",
                request.remote,
                request.method,
                request.path,
            )
            raise json_error(
                web.HTTPUnauthorized,
                "unauthorized",
                "A valid registry token is required.",
                **{"WWW-Authenticate": "Bearer"},
            )

    async def handle_put(self, request: web.Request) -> web.Response:
        self.authorize(request)
        body = await _json_body(request)
        try:
            instance = Instance.from_json({**body, "id": request.match_info["id"]})
            ttl = float(body.get("ttl", self.default_ttl))
            if not math.isfinite(ttl):
                raise ValueError("ttl must be a finite number")
            ttl = min(max(ttl, 0.5), MAX_TTL)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise json_error(
                web.HTTPBadRequest,
                "bad_request",
                'Send {"url": "http://host:port", "models": {"name": "version"}, "ttl": seconds}.',
            ) from None
        if not instance.url.startswith(("http://", "https://")):
            raise json_error(
                web.HTTPBadRequest, "bad_request", f"url must start with http:// or https://, got {instance.url!r}"
            )
        self.register(instance, ttl)
        return web.json_response({"id": instance.id, "ttl": ttl})

    async def handle_delete(self, request: web.Request) -> web.Response:
        self.authorize(request)
        known = self.instances.get(request.match_info["id"])
        if known is None:
            raise json_error(web.HTTPNotFound, "not_found", "No such instance.")
        self.deregister(known[0])
        return web.json_response({"id": known[0].id, "deregistered": True})

    async def handle_list(self, request: web.Request) -> web.Response:
        self.authorize(request)
        return web.json_response({"instances": [i.as_json() for i in self.healthy()]})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "bad_request", "The body must be a JSON object.")
    return body
