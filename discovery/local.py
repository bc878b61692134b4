"""The local registry: held in the proxy's memory, reached by workers over HTTP. Both halves live here.

Usage:
    EmbeddedRegistry(token)          the proxy's half: its routes() serve the API below, watch() follows it
    LocalRegistry(url, token)        the worker's half: register / renew / deregister over HTTP

    PUT    /registry/instances/<id>   {"url": ..., "models": {...}, "ttl": 10}   register or renew
    DELETE /registry/instances/<id>                                              deregister
    GET    /registry/instances                                                   list

Each call needs ``Authorization: Bearer <token>``; anything else is refused with 401 and
logged, so nobody on the network can slip a rogue worker into the rotation and receive
users' images. An instance not renewed within its TTL disappears; a restarted proxy learns
its workers again from their next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from aiohttp import web

from visionpool.client.wire import REGISTRY_INSTANCE, REGISTRY_INSTANCES, BadRequest, NotFound, Unauthorized
from visionpool.client.wire import registry_instance_path as instance_path

from .base import Directory, Instance, Registry, RegistryError

logger = logging.getLogger(__name__)
MAX_TTL = 3600.0
MIN_TTL = 0.5
PAYLOAD_HELP = 'Send {"url": "http://host:port", "models": {"name": "version"}, "ttl": seconds}.'


def read_token(path: Path) -> str | None:
    """The token in ``path``, or None when the file is not there (yet)."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one, written with mode 600, when there is none."""
    token = read_token(path)
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return token


def payload(instance: Instance, ttl: float) -> dict[str, Any]:
    """The body of a registration."""
    return {**instance.as_json(), "ttl": ttl}


def parse_payload(instance_id: str, body: Any, default_ttl: float) -> tuple[Instance, float]:
    """(instance, ttl) from a registration body; ValueError when it is not one."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    try:
        instance = Instance.from_json({**body, "id": instance_id})
        ttl = float(body.get("ttl", default_ttl))
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"missing or malformed field: {error}") from None
    if not math.isfinite(ttl):
        raise ValueError("ttl must be a finite number")
    if not instance.url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {instance.url!r}")
    return instance, min(max(ttl, MIN_TTL), MAX_TTL)


class LocalRegistry(Registry):
    """The worker's half: registers with the proxy's embedded registry; renews every third of the TTL."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        token: str | None = None,
        token_file: Path | None = None,
        ttl: float = 10.0,
        timeout: float = 2.0,
        ca: Path | None = None,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the registry url must look like http://proxy-host:8080, got {url!r}")
        self.url, self.token, self.token_file = url.rstrip("/"), token, token_file
        self.ttl, self.timeout = ttl, timeout
        self.verify: str | bool = str(ca) if ca is not None else True  # an https registry, verified
        self.cert = (str(cert[0]), str(cert[1])) if cert is not None else None  # shown to a proxy that asks (mTLS)
        self.renew_interval = ttl / 3

    def register(self, instance: Instance) -> None:
        self._send("PUT", instance, payload(instance, self.ttl))

    def renew(self, instance: Instance) -> None:
        self.register(instance)

    def deregister(self, instance: Instance) -> None:
        self._send("DELETE", instance, None)

    def _headers(self) -> dict[str, str]:
        token = self.token or (read_token(self.token_file) if self.token_file else None)
        if not token:
            where = f" or write it to {self.token_file}" if self.token_file else ""
            raise RegistryError(f"no registry token: set VISIONPOOL_REGISTRY_TOKEN{where}")
        return {"Authorization": f"Bearer {token}"}

    def _send(self, method: str, instance: Instance, body: dict[str, Any] | None) -> None:
        target = self.url + instance_path(instance.id)
        try:
            response = requests.request(
                method, target, json=body, headers=self._headers(), timeout=self.timeout, verify=self.verify,
                cert=self.cert,
            )  # fmt: skip
        except requests.RequestException as error:
            raise RegistryError(f"the registry at {self.url} is unreachable: {error}") from None
        if response.status_code == 401:
            raise RegistryError(f"the registry at {self.url} refused our token (401): check VISIONPOOL_REGISTRY_TOKEN")
        if response.status_code >= 400 and not (method == "DELETE" and response.status_code == 404):
            raise RegistryError(f"the registry at {self.url} answered {response.status_code}: {response.text[:200]}")


class EmbeddedRegistry(Directory):
    """The proxy's half: instances with an expiry time, in memory, behind the HTTP API above."""

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
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(soonest - time.monotonic(), 0.0) + 0.01):  # see consul.py's _poll
                    await self._changed.wait()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.put(REGISTRY_INSTANCE, self.handle_put),
            web.delete(REGISTRY_INSTANCE, self.handle_delete),
            web.get(REGISTRY_INSTANCES, self.handle_list),
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
            raise Unauthorized("A valid registry token is required.", headers={"WWW-Authenticate": "Bearer"})

    async def handle_put(self, request: web.Request) -> web.Response:
        self.authorize(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            instance, ttl = parse_payload(request.match_info["id"], body, self.default_ttl)
        except ValueError as error:
            raise BadRequest(f"Not a registration ({error}). {PAYLOAD_HELP}") from None
        self.register(instance, ttl)
        return web.json_response({"id": instance.id, "ttl": ttl})

    async def handle_delete(self, request: web.Request) -> web.Response:
        self.authorize(request)
        known = self.instances.get(request.match_info["id"])
        if known is None:
            raise NotFound("No such instance.")
        self.deregister(known[0])
        return web.json_response({"id": known[0].id, "deregistered": True})

    async def handle_list(self, request: web.Request) -> web.Response:
        self.authorize(request)
        return web.json_response({"instances": [i.as_json() for i in self.healthy()]})
