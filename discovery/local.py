"""The local registry, as a worker sees it: the proxy's embedded registry over HTTP.

Usage:
    registry = LocalRegistry(url="http://127.0.0.1:8080", token_file=path)
    registry.register(instance)      # PUT /registry/instances/<id>, Authorization: Bearer <token>
    registry.renew(instance)         # the same PUT: a restarted proxy learns the worker again
    registry.deregister(instance)    # DELETE /registry/instances/<id>

Without a token the proxy answers 401, so nobody on the network can slip a rogue
worker into the rotation and receive users' images.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
import requests

from .base import Instance, Registry, RegistryError

logger = logging.getLogger(__name__)


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


class LocalRegistry(Registry):
    """Registers with the proxy's embedded registry; the TTL is renewed every third of itself."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        token: str | None = None,
        token_file: Path | None = None,
        ttl: float = 10.0,
        timeout: float = 2.0,
        poll_interval: float = 1.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the registry url must look like http://proxy-host:8080, got {url!r}")
        self.url, self.token, self.token_file = url.rstrip("/"), token, token_file
        self.ttl, self.timeout, self.poll_interval = ttl, timeout, poll_interval
        self.renew_interval = ttl / 3

    def register(self, instance: Instance) -> None:
        self._send("PUT", instance, {**instance.as_json(), "ttl": self.ttl})

    def renew(self, instance: Instance) -> None:
        self.register(instance)

    def deregister(self, instance: Instance) -> None:
        self._send("DELETE", instance, None)

    async def watch(self) -> AsyncIterator[list[Instance]]:
        """Follow another proxy's embedded registry by polling it."""
        last: list[Instance] | None = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            while True:
                try:
                    async with session.get(f"{self.url}/registry/instances", headers=self._headers()) as response:
                        response.raise_for_status()
                        current = [Instance.from_json(item) for item in (await response.json())["instances"]]
                    if current != last:
                        last = current
                        yield current
                except (TimeoutError, aiohttp.ClientError, KeyError, ValueError) as error:
                    logger.warning(
                        "local registry at %s unreachable (%s); keeping the last known workers", self.url, error
                    )
                await asyncio.sleep(self.poll_interval)

    def _headers(self) -> dict[str, str]:
        token = self.token or (read_token(self.token_file) if self.token_file else None)
        if not token:
            where = f" or write it to {self.token_file}" if self.token_file else ""
            raise RegistryError(f"no registry token: set VISIONPOOL_REGISTRY_TOKEN{where}")
        return {"Authorization": f"Bearer {token}"}

    def _send(self, method: str, instance: Instance, body: dict | None) -> None:
        target = f"{self.url}/registry/instances/{quote(instance.id, safe='')}"
        try:
            response = requests.request(method, target, json=body, headers=self._headers(), timeout=self.timeout)
        except requests.RequestException as error:
            raise RegistryError(f"the registry at {self.url} is unreachable: {error}") from None
        if response.status_code == 401:
            raise RegistryError(f"the registry at {self.url} refused our token (401): check VISIONPOOL_REGISTRY_TOKEN")
        if response.status_code >= 400 and not (method == "DELETE" and response.status_code == 404):
            raise RegistryError(f"the registry at {self.url} answered {response.status_code}: {response.text[:200]}")
