"""Consul's KV store: where a pool that runs on Consul may keep its API keys and its pool secret, so that every
proxy and worker reads the same ones and a change reaches them all at once.

Usage:
    where = kv_key("consul:visionpool/api-keys")        # "visionpool/api-keys"; None for a plain file's path
    secret = load_secret(settings.pool_secret_file, settings.consul_url, settings.consul_token)   # file or KV
    store = ConsulKV("http://127.0.0.1:8500", token)
    index, value = store.get(where)                     # (index, None) when the key is missing
    store.update(where, change)                         # read, change, check-and-set: again when another wrote first
    async for value in store.watch(where): ...          # the value now, then each new one (blocking queries)

A value is bytes; a missing key reads as None. Every failure is a ``RegistryError`` naming the agent and the key;
``watch`` logs outages and goes on (backing off), so what was read before stays in force meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from visionpool.serving.settings import kv_key
from visionpool.serving.tickets import check_secret, read_secret

from .base import RegistryError
from .consul import (
    REQUEST_TIMEOUT,
    WATCH_ERRORS,
    aio_client,
    backoff,
    call_agent,
    next_index,
    split_url,
    sync_client,
)

logger = logging.getLogger(__name__)

WAIT = "30s"  # a watch's blocking query: Consul answers at once on a change, else after this
BACKOFF_MAX = 10.0  # seconds between a failing watch's tries, at most
CAS_TRIES = 10  # writes raced by another writer before update() gives up
_UNREAD: Any = object()  # what watch() has yielded before its first read: nothing


class ConsulKV:
    """Reads, writes and watches keys through one Consul agent, with an ACL token when given."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.scheme, self.host, self.port = split_url(url, "consul url", "http://consul:8500")
        self.url, self.token = url.rstrip("/"), token
        self._client = sync_client(self.scheme, self.host, self.port, token)

    def get(self, key: str) -> tuple[int, bytes | None]:
        """(index, value) of a key; the value is None when the key is missing."""
        index, entry = self._call(f"read {key}", lambda: self._client.kv.get(key))
        return int(index), _value(entry)

    def update(self, key: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """Write ``change(value now)`` with check-and-set, again from the new value when another writer was first."""
        for _ in range(CAS_TRIES):
            _, entry = self._call(f"read {key}", lambda: self._client.kv.get(key))
            new = change(_value(entry))
            cas = int(entry["ModifyIndex"]) if entry else 0  # 0: only if the key is still missing
            if self._call(f"write {key}", lambda: self._client.kv.put(key, new, cas=cas)):  # noqa: B023 - called now
                return new
        raise RegistryError(f"consul at {self.url}: {key} changed under every one of {CAS_TRIES} writes; try again")

    async def watch(self, key: str) -> AsyncIterator[bytes | None]:
        """The key's value once Consul first answers, then each time it changes; outages are logged and retried."""
        client = aio_client(self.scheme, self.host, self.port, self.token)
        index, failures, last = 0, 0, _UNREAD
        try:
            while True:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT + 60):
                        current, entry = await client.kv.get(key, index=index or None, wait=WAIT)
                except WATCH_ERRORS as error:
                    failures += 1
                    delay = backoff(failures, BACKOFF_MAX)
                    logger.warning("watching %s on consul at %s failed (%s: %s); what was read stays, retry in "
                                   "%.1f s", key, self.url, type(error).__name__, error, delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    continue
                failures, index = 0, next_index(index, int(current))
                value = _value(entry)
                if value != last:
                    last = value
                    yield value
        finally:
            await client.close()

    def _call(self, action: str, call: Callable[[], Any]) -> Any:
        needs = "the token needs key:read (proxies, workers) or key:write (visionpool keys) on it"
        return call_agent(self.url, action, needs, call)


def _value(entry: Any) -> bytes | None:
    """The bytes of a KV entry as py-consul returns it (a missing key, or an empty one, reads as None)."""
    if not entry:
        return None
    value = entry["Value"]
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def load_secret(where: Path, consul_url: str, consul_token: str | None) -> bytes:
    """The pool secret from its file, or from Consul's KV store for ``consul:<key>``; ValueError says what is wrong."""
    key = kv_key(where)
    if key is None:
        return read_secret(where)
    try:
        _, value = ConsulKV(consul_url, consul_token).get(key)
    except RegistryError as error:
        raise ValueError(f"pool secret: {error}") from None
    if value is None:
        raise ValueError(f"{where}: consul at {consul_url} has no such key (put one there: consul kv put {key} "
                         '"$(head -c 48 /dev/urandom | base64)")')  # fmt: skip
    return check_secret(value, str(where))
