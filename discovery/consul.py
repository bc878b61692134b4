"""Consul as the registry: workers register with an HTTP check on /readyz, proxies watch the passing ones.

Usage:
    registry = ConsulRegistry(url="http://consul:8500", token="...")

Consul's agent runs the health check itself; what a worker renews is the registration's truth:
every ``recheck`` seconds it asks the agent whether it still lists the worker (an agent rebuilt
without its data, ``DeregisterCriticalServiceAfter`` after a long pause, an operator's deregister)
and registers again when it does not. ``watch()`` follows
``/v1/health/service/<service>?passing`` with blocking queries (``index`` + ``wait``), as
https://developer.hashicorp.com/consul/api-docs/features/blocking describes, and keeps the last known
set through agent outages instead of reporting an empty pool.

Errors: every failure of register/deregister is a ``RegistryError`` naming the Consul URL;
a malformed URL or duration is a ``ValueError`` at construction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import consul
import consul.aio
import requests
from consul.callback import CB

from .base import SERVICE, Directory, Instance, Registry, RegistryError

logger = logging.getLogger(__name__)

TAG = "visionpool"  # every worker carries it, so Prometheus' consul_sd can select workers by tag
MODEL_TAG = "model="  # one tag per model: model=<name>, the exact name (tags allow any character)
MODEL_META = "model_"  # one meta key per model: model_<sanitised name> -> version
READY_PATH = "/readyz"  # what Consul's HTTP check polls on each worker
REQUEST_TIMEOUT = 10.0  # seconds for a call to the agent, on top of a blocking query's wait
BACKOFF_START = 0.25  # seconds before the first retry of a failed watch query; doubles up to retry_max
MIN_QUERY_GAP = 0.1  # seconds between two watch queries: Consul asks blocking clients to rate-limit

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_META_KEY_INVALID = re.compile(r"[^A-Za-z0-9_-]")
_META_KEY_MAX = 128  # Consul rejects longer meta keys
_WARNINGS_LOCK = threading.Lock()  # catch_warnings swaps process-wide state: one thread at a time
WATCH_ERRORS = (consul.ConsulException, aiohttp.ClientError, asyncio.TimeoutError, ValueError)  # a failed query


def parse_duration(value: str, name: str) -> float:
    """Seconds in a Go duration such as "2s", "1m30s" or "500ms"; ValueError names the option."""
    if not isinstance(value, str) or not _DURATIONS.fullmatch(value):
        raise ValueError(f"{name} must be a Go duration like '2s', '500ms' or '1m', not {value!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in _DURATION.findall(value))


def meta_key(model: str) -> str:
    """The Consul meta key holding a model's version: only [A-Za-z0-9_-], at most 128 characters."""
    return (MODEL_META + _META_KEY_INVALID.sub("_", model))[:_META_KEY_MAX]


def split_url(url: str, what: str, example: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; ValueError shows what to pass instead."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ValueError(f"{what} must look like {example}, not {url!r}")
    return parts.scheme, parts.hostname, port


@dataclass
class _WatchState:
    """Where a watch() loop stands: the index to block on, the last set yielded, the failures in a row."""

    index: int = 0
    last: list[Instance] | None = None
    failures: int = 0
    started: float = 0.0  # time.monotonic() of the last query
    filtered_warned: bool = False


class ConsulRegistry(Registry, Directory):
    """Workers as services in a Consul agent, health-checked by Consul on /readyz."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8500",
        token: str | None = None,
        service: str = SERVICE,
        check_interval: str = "2s",
        check_timeout: str = "2s",
        deregister_after: str = "1m",
        wait: str = "30s",
        retry_max: float = 10.0,
        recheck: float = 3.0,
    ) -> None:
        self.scheme, self.host, self.port = split_url(url, "consul url", "http://consul:8500")
        self.url = url.rstrip("/")
        self.token = token  # ACL token, sent as X-Consul-Token; None leaves CONSUL_HTTP_TOKEN to py-consul
        if not service:
            raise ValueError(f"service must be a non-empty Consul service name such as {SERVICE!r}")
        self.service = service
        durations = {"check_interval": check_interval, "check_timeout": check_timeout}
        for name, value in {**durations, "deregister_after": deregister_after}.items():
            parse_duration(value, name)
        self.check_interval, self.check_timeout, self.deregister_after = check_interval, check_timeout, deregister_after
        self.wait = wait
        self._query_timeout = parse_duration(wait, "wait") * 17 / 16 + REQUEST_TIMEOUT  # Consul adds wait/16 jitter
        if retry_max <= 0:
            raise ValueError(f"retry_max must be a positive number of seconds such as 10.0, not {retry_max!r}")
        self.retry_max = retry_max
        if recheck <= 0:
            raise ValueError(f"recheck must be a positive number of seconds such as 3.0, not {recheck!r}")
        self.renew_interval = recheck  # how often a worker checks that the agent still lists it
        self._client = sync_client(self.scheme, self.host, self.port, token)

    def register(self, instance: Instance) -> None:
        """Add the worker to the local agent with an HTTP check on its /readyz."""
        _, host, port = split_url(instance.url, "instance url", "http://worker-1:5000")
        check = consul.Check.http(
            instance.url.rstrip("/") + READY_PATH,
            self.check_interval,
            timeout=self.check_timeout,
            deregister=self.deregister_after,
        )
        accepted = self._agent(
            f"register {instance.id}",
            lambda client: client.agent.service.register(
                self.service,
                service_id=instance.id,
                address=host,
                port=port,
                tags=[TAG, *(MODEL_TAG + name for name in instance.models)],
                meta=self._meta(instance),
                check=check,
                replace_existing_checks=True,
            ),
        )
        if not accepted:  # py-consul returns False for a 404, e.g. a proxy in front of Consul that lacks the route
            raise RegistryError(f"consul at {self.url} did not accept the registration of {instance.id} (404)")
        logger.info("registered %s (%s) with consul at %s", instance.id, instance.url, self.url)

    def renew(self, instance: Instance) -> None:
        """Register again when the agent no longer lists this worker; RegistryError when it cannot be asked."""
        listed = self._agent(f"list the services to find {instance.id}", lambda client: client.agent.services())
        if instance.id not in (listed or {}):
            logger.warning("consul at %s no longer lists %s; registering it again", self.url, instance.id)
            self.register(instance)

    def deregister(self, instance: Instance) -> None:
        """Remove the worker and its check from the local agent; one the agent no longer knows is fine."""
        removed = self._agent(f"deregister {instance.id}", lambda client: client.agent.service.deregister(instance.id))
        if removed:
            logger.info("deregistered %s from consul at %s", instance.id, self.url)
        else:  # 404: Consul already dropped it (DeregisterCriticalServiceAfter) or it never registered
            logger.info("consul at %s did not know %s; nothing to deregister", self.url, instance.id)

    async def watch(self) -> AsyncIterator[list[Instance]]:
        """Yield the passing instances once Consul first answers, then on every change; outages keep the last set."""
        client = self._aio_client()
        state = _WatchState()
        try:
            while True:
                instances = await self._poll(client, state)
                if instances is not None and instances != state.last:
                    state.last = instances
                    yield instances
        finally:
            await client.close()

    def _meta(self, instance: Instance) -> dict[str, str]:
        """Service meta: the worker's URL and one model_<name> -> version key per model."""
        meta = {"url": instance.url} | ({"grpc": instance.grpc} if instance.grpc else {})
        for name, version in instance.models.items():
            if meta_key(name) in meta:
                logger.warning("models %r and another share the consul meta key %s", name, meta_key(name))
            meta[meta_key(name)] = version
        return meta

    def _agent(self, action: str, call: Callable[[consul.Consul], Any]) -> Any:
        """Run one agent call, turning py-consul's and requests' errors into RegistryError."""
        needs = f"pass a token with service:write on {self.service!r}"
        return call_agent(self.url, action, needs, lambda: call(self._client))

    def _aio_client(self) -> consul.aio.Consul:
        """An aiohttp-based client for the watch loop; it must be created inside the running loop."""
        return aio_client(self.scheme, self.host, self.port, self.token)

    async def _poll(self, client: consul.aio.Consul, state: _WatchState) -> list[Instance] | None:
        """One blocking query: the passing instances, or None after a failure (logged, then backed off)."""
        await asyncio.sleep(max(0.0, state.started + MIN_QUERY_GAP - time.monotonic()))
        state.started = time.monotonic()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
            # query fails, and the watch then never stops (seen as a watcher outliving its proxy's shutdown)
            async with asyncio.timeout(self._query_timeout):
                index, entries, filtered = await self._query(client, state.index)
        except WATCH_ERRORS as exc:
            await self._back_off(state, exc)
            return None
        if state.failures:
            logger.info("consul at %s answers again after %d failed watch queries", self.url, state.failures)
            state.failures = 0
        if filtered and not state.filtered_warned:
            logger.warning(
                "consul at %s hid some %s instances from this token (ACLs); give the watcher service:read",
                self.url,
                self.service,
            )
            state.filtered_warned = True
        state.index = next_index(state.index, index)
        return sorted((to_instance(entry) for entry in entries), key=lambda instance: instance.id)

    async def _query(self, client: consul.aio.Consul, index: int) -> tuple[int, list[dict[str, Any]], bool]:
        """GET /v1/health/service/<service>?passing, blocking on ``index`` when there is one."""
        params = [("index", str(index)), ("wait", self.wait)] if index else []
        params.append(("passing", "1"))
        path = f"/v1/health/service/{self.service}"
        result: tuple[int, list[dict[str, Any]], bool] = await client.http.get(
            _health_response, path, params=params, headers=client.prepare_headers()
        )
        return result

    async def _back_off(self, state: _WatchState, exc: BaseException) -> None:
        """Log a failed query, then sleep an exponentially growing, jittered, capped delay."""
        state.failures += 1
        delay = backoff(state.failures, self.retry_max)
        known = "none yet" if state.last is None else len(state.last)
        logger.warning(
            "watching %s on consul at %s failed (%s: %s); keeping the last known instances (%s), retry in %.1f s",
            self.service,
            self.url,
            type(exc).__name__,
            exc,
            known,
            delay,
        )
        await asyncio.sleep(delay)


def sync_client(scheme: str, host: str, port: int, token: str | None) -> consul.Consul:
    """A client for one agent; an explicit token wins (py-consul otherwise prefers CONSUL_HTTP_TOKEN)."""
    client = consul.Consul(host=host, port=port, scheme=scheme, token=token, connections_timeout=REQUEST_TIMEOUT)
    if token is not None:
        client.token = token
    return client


def call_agent(url: str, action: str, needs: str, call: Callable[[], Any]) -> Any:
    """Run one call to the agent at ``url``, turning py-consul's and requests' errors into RegistryError (a refused
    token is told what it ``needs``)."""
    try:
        return call()
    except consul.ACLPermissionDenied as exc:
        raise RegistryError(f"consul at {url} refused to {action}: {exc}; {needs}") from exc
    except consul.ConsulException as exc:
        raise RegistryError(f"consul at {url} refused to {action}: {exc}") from exc
    except requests.RequestException as exc:
        raise RegistryError(
            f"cannot reach consul at {url} to {action} ({type(exc).__name__}); is the agent running?"
        ) from exc


def backoff(failures: int, ceiling: float) -> float:
    """Seconds before retrying after ``failures`` failed queries in a row: doubling from BACKOFF_START up to
    ``ceiling``, jittered down to half so that watchers do not retry in step."""
    top = min(ceiling, BACKOFF_START * 2 ** min(failures - 1, 30))
    return random.uniform(top / 2, top)


def aio_client(scheme: str, host: str, port: int, token: str | None) -> consul.aio.Consul:
    """An aiohttp-based client for a watch loop (made inside the running loop); an explicit token wins."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        # py-consul 1.8 still passes aiohttp's deprecated verify_ssl/ssl_context; harmless, not ours to fix
        warnings.filterwarnings("ignore", "(verify_ssl|ssl_context) is deprecated", DeprecationWarning)
        client = consul.aio.Consul(host=host, port=port, scheme=scheme, token=token)
    if token is not None:
        client.token = token  # py-consul otherwise prefers CONSUL_HTTP_TOKEN over the argument
    return client


def next_index(previous: int, current: int) -> int:
    """The index for the next blocking query, by Consul's rules: reset on going backwards, never below 1."""
    if current < previous:
        return 0  # the agent's state was rebuilt; start over with a non-blocking query
    return max(current, 1)


def to_instance(entry: dict[str, Any]) -> Instance:
    """An Instance from one /v1/health/service entry."""
    service = entry.get("Service") or {}
    meta = service.get("Meta") or {}
    url = meta.get("url") or _service_url(service, entry.get("Node") or {})
    models = _models(service.get("Tags") or [], meta)
    return Instance(str(service.get("ID", "")), str(url), models, str(meta.get("grpc") or ""))


def _service_url(service: dict[str, Any], node: dict[str, Any]) -> str:
    """http://address:port from the service, falling back to the node's address as Consul does."""
    address = str(service.get("Address") or node.get("Address") or "")
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{service.get('Port', 0)}"


def _models(tags: list[str], meta: dict[str, str]) -> dict[str, str]:
    """Model name -> version: names from the model= tags (exact), versions from the meta keys."""
    names = [tag[len(MODEL_TAG) :] for tag in tags if tag.startswith(MODEL_TAG)]
    if names:
        return {name: str(meta.get(meta_key(name), "")) for name in names}
    return {key[len(MODEL_META) :]: str(value) for key, value in meta.items() if key.startswith(MODEL_META)}


def _health_response(response: Any) -> tuple[int, list[dict[str, Any]], bool]:
    """py-consul callback: (X-Consul-Index, entries, whether ACLs filtered some out)."""
    index, entries = CB.json(index=True)(response)
    filtered = str(response.headers.get("X-Consul-Results-Filtered-By-ACLs", "")).lower() == "true"
    return int(index), list(entries or []), filtered
