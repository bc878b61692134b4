"""An in-process double of the Consul agent HTTP API, as much of it as visionpool uses, plus a watch runner.

Usage:
    double = ConsulDouble(token="s3cret")  # ACLs on, default deny; auto_pass=True
    double.start()                          # serves http://127.0.0.1:<free port> from a thread
    double.set_status("w1", "critical")     # what Consul's HTTP check would do; bumps the index
    double.stop(); double.start()           # an agent outage on the same port: connections refused meanwhile
    double.restart_empty()                  # the agent rebuilt without its data dir
    double.close()
    ConsulDouble(run_checks=True)           # checks start critical and the double runs them, as Consul does

What it reproduces, after developer.hashicorp.com/consul/api-docs (agent/service, health,
features/blocking, api-structure) and hashicorp/consul's agent/agent_endpoint.go and acl/errors.go:
- PUT /v1/agent/service/register: JSON keys matched case-insensitively (Consul decodes "id", "ID" and
  "Id" alike), "Check" or "Checks", ?replace-existing-checks; 400 "Missing service name",
  "Invalid service address" (0.0.0.0, ::), "Invalid Service Meta: ..." (64 pairs, keys [A-Za-z0-9_-]
  up to 128 characters, no "consul-" prefix, values up to 512), "Invalid check: ..." (no interval).
  Checks are named "service:<id>" (":1", ":2"... when several) and start "critical" as in Consul,
  unless the definition sets Status or the double was made with auto_pass=True (the default), which
  stands for a first HTTP check that passes at once.
- With run_checks=True, the double runs HTTP checks itself as Consul's agent does (checks/check.go):
  the first after a random stagger within the interval, then every interval; GET with the check's
  Timeout (10 s by default); 2xx is passing, 429 warning, anything else or no answer critical. Its
  reaper (agent.go reapServices, every reap_interval, 30 s in Consul) removes a service whose check
  has been critical for longer than DeregisterCriticalServiceAfter, never sooner than
  deregister_floor (Consul: 1 minute).
- GET /v1/agent/services: {id: service} of the agent's services, filtered by ACL like health reads.
- PUT /v1/agent/service/deregister/<id>: 404 'Unknown service ID "<id>". Ensure that the service ID is
  passed, not the service name.'
- GET /v1/health/service/<name>: [{"Node", "Service", "Checks"}] with the node's serfHealth check,
  X-Consul-Index (per service, never below 1), ?passing (all checks passing; "", 1, true... as Go's
  ParseBool), ?tag; blocking on ?index with ?wait (Go durations, default 5m, capped at 10m, plus up
  to wait/16 jitter); an index from the future blocks until the wait ends and returns the lower
  current index, which is how a rebuilt agent looks to a client.
- ACLs (when made with a token): the token comes from X-Consul-Token, "Authorization: Bearer" or
  ?token=; an unknown token gets 403 "ACL not found"; a write without a token gets 403 "Permission
  denied: anonymous token lacks permission 'service:write' ..."; a read without one gets 200 with
  the entries filtered out and X-Consul-Results-Filtered-By-ACLs: true.
- KV (developer.hashicorp.com/consul/api-docs/kv, agent/kvs_endpoint.go): GET /v1/kv/<key> answers
  [{"Key", "Value" (base64), "Flags", "LockIndex", "CreateIndex", "ModifyIndex"}] or 404, with
  X-Consul-Index (the KV table's index), ?raw, and blocking on ?index/?wait until that key changes;
  PUT with the raw value as body (at most 512 KiB, else 413), ?cas=<ModifyIndex> (0: only while
  missing) answering true or false; DELETE likewise. Under ACLs an anonymous read or write gets 403
  "Permission denied: anonymous token lacks permission 'key:read' ..." ('key:write' for writes).
Not reproduced: ?filter, ?near, ?dc, namespaces, Connect, TCP/gRPC/script checks, KV's ?recurse, ?keys,
sessions and locks, other endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import random
import re
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from visionpool.discovery import Instance, Registry

T = TypeVar("T")

STATUSES = ("passing", "warning", "critical")
MAX_WAIT = 600.0  # seconds: Consul caps a blocking query's wait at 10 minutes
DEFAULT_WAIT = 300.0  # seconds: and waits 5 minutes when none is given
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_META_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TRUE, _FALSE = ("", "1", "t", "T", "true", "TRUE", "True"), ("0", "f", "F", "false", "FALSE", "False")
_ANONYMOUS = object()  # the token of a request that sent none


@dataclass(frozen=True)
class Recorded:
    """One request the double received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # the decoded JSON body, or None


def go_duration(text: str) -> float | None:
    """Seconds in a Go duration ("5s", "1m30s"), or None when Go's time.ParseDuration would fail."""
    if text == "0":
        return 0.0
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def field(obj: dict[str, Any], name: str) -> Any:
    """obj[name] the way Consul decodes JSON: case-insensitive, snake_case accepted."""
    wanted = name.lower()
    for key, value in obj.items():
        if key.lower().replace("_", "") == wanted:
            return value
    return None


def meta_problem(meta: dict[str, Any]) -> str | None:
    """Why Consul would reject this service meta, in its words, or None."""
    if len(meta) > 64:
        return "Node metadata cannot contain more than 64 key/value pairs"
    for key, value in meta.items():
        reason = None
        if not _META_KEY.fullmatch(key):
            reason = "Key contains invalid characters"
        elif len(key) > 128:
            reason = "Key is too long (limit: 128 characters)"
        elif key.startswith("consul-"):
            reason = "Key prefix 'consul-' is reserved for internal use"
        elif len(str(value)) > 512:
            reason = "Value is too long (limit: 512 characters)"
        if reason:
            return f"Couldn't load metadata pair ('{key}', '{value}'): {reason}"
    return None


def check_definitions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The check definitions of a registration, from "Check" and "Checks"."""
    single = field(body, "Check")
    return ([single] if single else []) + list(field(body, "Checks") or [])


def check_problem(check: dict[str, Any]) -> str | None:
    """Why Consul would reject this check definition, or None."""
    status = field(check, "Status")
    if status and status not in STATUSES:
        return "Status for checks must 'passing', 'warning', 'critical'"
    if field(check, "TTL"):
        return None
    if not any(field(check, kind) for kind in ("HTTP", "TCP", "GRPC", "Args", "H2PING", "UDP")):
        return "Must provide TTL or Script/DockerContainerID/HTTP/TCP/UDP/H2PING/GRPC/AliasNode/AliasService"
    interval = go_duration(str(field(check, "Interval") or ""))
    if not interval:
        return "Interval must be > 0 for Script, HTTP, H2PING, TCP or UDP checks"
    return None


def text(status: int, message: str) -> web.Response:
    """A plain-text error as Consul writes them."""
    return web.Response(status=status, text=message)


class ConsulDouble:
    """A Consul agent (on 127.0.0.1 unless told) speaking the service, health and ACL parts of its HTTP API."""

    def __init__(
        self,
        token: str | None = None,
        auto_pass: bool = True,
        node: str = "consul-double",
        node_address: str = "127.0.0.1",
        run_checks: bool = False,
        reap_interval: float = 30.0,
        deregister_floor: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token  # the one valid ACL token (a management token); None = ACLs disabled
        self.run_checks = run_checks  # run HTTP checks like Consul's agent (they start critical)
        self.auto_pass = auto_pass and not run_checks  # new checks start passing (True) or critical (False)
        self.reap_interval, self.deregister_floor = reap_interval, deregister_floor
        self._check_tasks: dict[str, asyncio.Task[None]] = {}  # check ID -> the task running it
        self._critical_since: dict[str, float] = {}  # check ID -> time.monotonic() it became critical
        self._reaper: asyncio.Task[None] | None = None
        self.node, self.node_address = node, node_address
        self.host = host  # where it listens (a test host's address, for the multi-host test)
        self.port = port  # 0: a free one, fixed by the first start(); later starts reuse it
        self._requests: list[Recorded] = []
        self._services: dict[str, dict[str, Any]] = {}  # service ID -> Service as /health shows it
        self._checks: dict[str, dict[str, Any]] = {}  # check ID -> check as /health shows it
        self._index = 10  # the raft index; Consul's is never 0
        self._service_index: dict[str, int] = {}  # service name -> index of its last change
        self._kv: dict[str, dict[str, Any]] = {}  # key -> entry, Value as bytes
        self._kv_changed: dict[str, int] = {}  # key -> index of its last write or delete
        self._kv_index = 1  # the KV table's index
        self._runner: web.AppRunner | None = None
        self._loop = asyncio.new_event_loop()
        self._changed = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="consul-double", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where the agent listens, e.g. http://127.0.0.1:53211."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, oldest first."""
        return list(self._requests)

    def requests_to(self, path: str) -> list[Recorded]:
        """The requests received for one path."""
        return [request for request in self.requests if request.path == path]

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        """Registered services by ID, as the Service part of a /v1/health/service entry."""
        return self._call(self._copy(self._services))

    def checks_of(self, service_id: str) -> list[dict[str, Any]]:
        """The checks registered for one service, as /v1/health/service lists them."""
        return self._call(self._copy([c for c in self._checks.values() if c["ServiceID"] == service_id]))

    def index_of(self, name: str) -> int:
        """The X-Consul-Index /v1/health/service/<name> answers with now."""
        return self._call(self._copy(self._index_of(name)))

    def start(self) -> None:
        """Listen on the port (a free one the first time); returns once connections are accepted."""
        self._call(self._start())

    def stop(self) -> None:
        """Stop listening and drop open connections, in-flight blocking queries included; state is kept."""
        self._call(self._stop())

    def close(self) -> None:
        """Stop and end the double's thread."""
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def set_status(self, service_id: str, status: str) -> None:
        """Set every check of a service to passing/warning/critical, as Consul's check runner would."""
        assert status in STATUSES, f"status must be one of {STATUSES}"
        self._call(self._set_status(service_id, status))

    def touch(self, service_id: str) -> None:
        """An idempotent write: bump the service's index without changing anything (anti-entropy does this)."""
        self._call(self._touch(service_id))

    def forget(self) -> None:
        """Lose every service and check and restart the index low: the agent was rebuilt from scratch."""
        self._call(self._forget())

    def restart_empty(self) -> None:
        """Stop, lose everything, start again on the same port: an agent rebuilt without its data dir."""
        self.stop()
        self.forget()
        self.start()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the double's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _copy(self, value: T) -> T:
        """A deep copy of some state, taken on the double's loop."""
        copied: T = json.loads(json.dumps(value))
        return copied

    async def _start(self) -> None:
        """Bind (the same port after a stop, hence SO_REUSEADDR) and serve."""
        if self._runner is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.05)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        if self.run_checks and self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())

    async def _stop(self) -> None:
        """Close the listener and every connection."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _app(self) -> web.Application:
        """The routes of the agent API the double speaks."""
        app = web.Application(middlewares=[self._record])
        app.router.add_put("/v1/agent/service/register", self._register)
        app.router.add_put("/v1/agent/service/deregister/{id}", self._deregister)
        app.router.add_get("/v1/health/service/{name}", self._health_service)
        app.router.add_get("/v1/agent/services", self._agent_services)
        app.router.add_get("/v1/kv/{key:.+}", self._kv_get)
        app.router.add_put("/v1/kv/{key:.+}", self._kv_put)
        app.router.add_delete("/v1/kv/{key:.+}", self._kv_delete)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Keep every request for the tests' assertions."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {key.lower(): value for key, value in request.headers.items()}
        self._requests.append(Recorded(request.method, request.path, dict(request.query), headers, body))
        response: web.StreamResponse = await handler(request)
        return response

    def _token(self, request: web.Request) -> object:
        """The request's ACL token: header, bearer or ?token=, else the anonymous one."""
        bearer = request.headers.get("Authorization", "")
        token = (
            request.headers.get("X-Consul-Token")
            or (bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else "")
            or request.query.get("token")
        )
        return token or _ANONYMOUS

    def _unknown_token(self, request: web.Request) -> web.Response | None:
        """403 "ACL not found" for a token the agent does not know, as Consul resolves it first."""
        token = self._token(request)
        if self.token is not None and token is not _ANONYMOUS and token != self.token:
            return text(403, "ACL not found")
        return None

    def _key_denied(self, request: web.Request, access: str) -> web.Response | None:
        """403 for an unknown token, or the anonymous one under ACLs, on a KV key (reads are denied, not filtered)."""
        rejected = self._unknown_token(request)
        if rejected or self.token is None or self._token(request) is not _ANONYMOUS:
            return rejected
        return text(
            403,
            f"Permission denied: anonymous token lacks permission 'key:{access}' on \"{request.match_info['key']}\". "
            "The anonymous token is used implicitly when a request does not specify a token.",
        )

    def kv_put(self, key: str, value: bytes) -> None:
        """Write a key as `consul kv put` would (no token asked): what an operator does beside the pool."""
        self._call(self._kv_write(key, value))

    async def _kv_get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/kv/<key>, blocking when asked to."""
        rejected = self._key_denied(request, "read")
        if rejected:
            return rejected
        key = request.match_info["key"]
        try:
            min_index = int(request.query.get("index", "0"))
        except ValueError:
            return text(400, "Invalid index")
        wait = go_duration(request.query["wait"]) if "wait" in request.query else DEFAULT_WAIT
        if wait is None:
            return text(400, "Invalid wait time")
        if min_index:
            deadline = self._loop.time() + min(wait, MAX_WAIT)
            while self._kv_changed.get(key, 0) <= min_index:  # a change to another key wakes it to wait again
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        headers = {"X-Consul-Index": str(self._kv_index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
        entry = self._kv.get(key)
        if entry is None:
            return web.Response(status=404, headers=headers)
        if "raw" in request.query:
            return web.Response(body=entry["Value"], headers=headers)
        shown = dict(entry, Value=base64.b64encode(entry["Value"]).decode() if entry["Value"] else None)
        return web.json_response([shown], headers=headers)

    async def _kv_put(self, request: web.Request) -> web.Response:
        """PUT /v1/kv/<key>: the body is the value; ?cas makes it conditional."""
        rejected = self._key_denied(request, "write")
        if rejected:
            return rejected
        value = await request.read()
        if len(value) > 512 * 1024:
            return text(413, f"Request body(Value) too large, max size: {512 * 1024} bytes. See ...")
        key, cas = request.match_info["key"], request.query.get("cas")
        if cas is not None and not self._cas_holds(key, cas):
            return web.json_response(False)
        await self._kv_write(key, value)
        return web.json_response(True)

    async def _kv_delete(self, request: web.Request) -> web.Response:
        """DELETE /v1/kv/<key>, with ?cas as for a write."""
        rejected = self._key_denied(request, "write")
        if rejected:
            return rejected
        key, cas = request.match_info["key"], request.query.get("cas")
        if cas is not None and not self._cas_holds(key, cas):
            return web.json_response(False)
        if self._kv.pop(key, None) is not None:
            self._kv_index = max(self._kv_index, self._index) + 1
            self._index = self._kv_index
            self._kv_changed[key] = self._kv_index
            self._changed.set()
            self._changed = asyncio.Event()
        return web.json_response(True)

    def _cas_holds(self, key: str, cas: str) -> bool:
        """?cas=0 holds while the key is missing, ?cas=N while its ModifyIndex is N."""
        entry = self._kv.get(key)
        return int(cas) == (entry["ModifyIndex"] if entry else 0)

    async def _kv_write(self, key: str, value: bytes) -> None:
        self._kv_index = max(self._kv_index, self._index) + 1
        self._index = self._kv_index
        old = self._kv.get(key)
        created = old["CreateIndex"] if old else self._kv_index
        self._kv[key] = {"LockIndex": 0, "Key": key, "Flags": 0, "Value": value,
                         "CreateIndex": created, "ModifyIndex": self._kv_index}  # fmt: skip
        self._kv_changed[key] = self._kv_index
        self._changed.set()
        self._changed = asyncio.Event()

    def _write_denied(self, request: web.Request, name: str) -> web.Response | None:
        """403 when the anonymous token tries to write a service under ACLs."""
        if self.token is not None and self._token(request) is _ANONYMOUS:
            return text(
                403,
                f"Permission denied: anonymous token lacks permission 'service:write' on \"{name}\". "
                "The anonymous token is used implicitly when a request does not specify a token.",
            )
        return None

    async def _register(self, request: web.Request) -> web.Response:
        """PUT /v1/agent/service/register."""
        rejected = self._unknown_token(request)
        if rejected:
            return rejected
        try:
            body = json.loads(await request.text())
        except ValueError as exc:
            return text(400, f"Request decode failed: {exc}")
        if not isinstance(body, dict):
            return text(400, "Request decode failed: expected a JSON object")
        problem = self._registration_problem(body)
        if problem:
            return text(400, problem)
        denied = self._write_denied(request, str(field(body, "Name")))
        if denied:
            return denied
        self._add_service(body, request.query.get("replace-existing-checks") in ("true", "1"))
        return web.Response()

    def _registration_problem(self, body: dict[str, Any]) -> str | None:
        """The 400 message Consul would answer this registration with, or None."""
        if not field(body, "Name"):
            return "Missing service name"
        if field(body, "Address") in ("0.0.0.0", "::", "[::]"):
            return "Invalid service address"
        meta = meta_problem(dict(field(body, "Meta") or {}))
        if meta:
            return f"Invalid Service Meta: {meta}"
        for check in check_definitions(body):
            problem = check_problem(check)
            if problem:
                return f"Invalid check: {problem}"
        return None

    def _add_service(self, body: dict[str, Any], replace_checks: bool) -> None:
        """Store a service (replacing one with the same ID) and its checks."""
        name = str(field(body, "Name"))
        service_id = str(field(body, "ID") or name)
        tags = list(field(body, "Tags") or [])
        previous = self._services.get(service_id)
        self._index += 1
        self._services[service_id] = {
            "ID": service_id,
            "Service": name,
            "Tags": tags,
            "Address": str(field(body, "Address") or ""),
            "Meta": dict(field(body, "Meta") or {}),
            "Port": int(field(body, "Port") or 0),
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": bool(field(body, "EnableTagOverride")),
            "CreateIndex": previous["CreateIndex"] if previous else self._index,
            "ModifyIndex": self._index,
        }
        if replace_checks:
            self._drop_checks(service_id)
        definitions = check_definitions(body)
        for number, check in enumerate(definitions, start=1):
            check_id = f"service:{service_id}" + (f":{number}" if len(definitions) > 1 else "")
            self._checks[check_id] = self._check(check_id, check, self._services[service_id])
            self._watch_check(check_id)
        self._bump(name)

    def _check(self, check_id: str, check: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
        """A check as /v1/health/service lists it."""
        kind = next((k for k in ("HTTP", "TCP", "GRPC", "TTL", "UDP", "H2PING") if field(check, k)), "script")
        definition = {
            key: field(check, key)
            for key in ("HTTP", "TCP", "GRPC", "TTL", "Interval", "Timeout", "DeregisterCriticalServiceAfter")
            if field(check, key) is not None
        }
        return {
            "Node": self.node,
            "CheckID": check_id,
            "Name": field(check, "Name") or f"Service '{service['Service']}' check",
            "Status": field(check, "Status") or ("passing" if self.auto_pass else "critical"),
            "Notes": field(check, "Notes") or "",
            "Output": "",
            "ServiceID": service["ID"],
            "ServiceName": service["Service"],
            "ServiceTags": list(service["Tags"]),
            "Type": kind.lower(),
            "Interval": definition.get("Interval", ""),
            "Timeout": definition.get("Timeout", ""),
            "Definition": definition,
            "CreateIndex": self._index,
            "ModifyIndex": self._index,
        }

    async def _deregister(self, request: web.Request) -> web.Response:
        """PUT /v1/agent/service/deregister/<id>."""
        rejected = self._unknown_token(request)
        if rejected:
            return rejected
        service_id = request.match_info["id"]
        service = self._services.get(service_id)
        if service is None:
            return text(
                404, f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the service name.'
            )
        denied = self._write_denied(request, service["Service"])
        if denied:
            return denied
        self._remove_service(service_id)
        return web.Response()

    def _drop_checks(self, service_id: str) -> None:
        """Forget every check of one service, and stop running them."""
        for check_id in [k for k, check in self._checks.items() if check["ServiceID"] == service_id]:
            del self._checks[check_id]
            self._critical_since.pop(check_id, None)
            task = self._check_tasks.pop(check_id, None)
            if task is not None:
                task.cancel()

    def _watch_check(self, check_id: str) -> None:
        """Note when a new check is critical, and run it when the double runs HTTP checks."""
        check = self._checks[check_id]
        if check["Status"] == "critical":
            self._critical_since[check_id] = time.monotonic()
        if self.run_checks and check["Definition"].get("HTTP"):
            self._check_tasks[check_id] = asyncio.get_running_loop().create_task(self._run_http_check(check_id))

    async def _run_http_check(self, check_id: str) -> None:
        """Consul's CheckHTTP: a random first stagger, then one GET every interval."""
        definition = self._checks[check_id]["Definition"]
        interval = go_duration(str(definition["Interval"])) or 10.0
        timeout = go_duration(str(definition.get("Timeout") or "10s")) or 10.0
        await asyncio.sleep(random.uniform(0, interval))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            while check_id in self._checks:
                status, output = await self._probe(session, str(definition["HTTP"]))
                self._record_status(check_id, status, output)
                await asyncio.sleep(interval)

    @staticmethod
    async def _probe(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
        """One HTTP check: 2xx passing, 429 warning, anything else (or nothing) critical."""
        try:
            async with session.get(url, headers={"User-Agent": "Consul Health Check"}) as response:
                body = (await response.read())[:4096].decode(errors="replace")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return "critical", f"Get {url!r}: {type(exc).__name__}"
        if 200 <= response.status < 300:
            return "passing", f"HTTP GET {url}: {response.status} Output: {body}"
        return ("warning" if response.status == 429 else "critical"), f"HTTP GET {url}: {response.status}"

    def _record_status(self, check_id: str, status: str, output: str) -> None:
        """A check's new result; a change of status bumps the index and wakes blocking queries."""
        check = self._checks.get(check_id)
        if check is None:
            return
        check["Output"] = output
        if status == "critical":
            self._critical_since.setdefault(check_id, time.monotonic())
        else:
            self._critical_since.pop(check_id, None)
        if check["Status"] != status:
            self._index += 1
            check["Status"], check["ModifyIndex"] = status, self._index
            self._bump(check["ServiceName"])

    async def _reap(self) -> None:
        """Consul's reapServices: drop services critical for longer than DeregisterCriticalServiceAfter."""
        while True:
            await asyncio.sleep(self.reap_interval)
            now = time.monotonic()
            for check_id, since in list(self._critical_since.items()):
                check = self._checks.get(check_id)
                after = (
                    go_duration(str(check["Definition"].get("DeregisterCriticalServiceAfter") or "")) if check else 0
                )
                if check and after and now - since > max(after, self.deregister_floor):
                    self._remove_service(check["ServiceID"])

    def _remove_service(self, service_id: str) -> None:
        """Drop a service and its checks, as a deregistration does."""
        service = self._services.pop(service_id, None)
        if service is None:
            return
        self._drop_checks(service_id)
        self._index += 1
        self._bump(service["Service"])

    async def _agent_services(self, request: web.Request) -> web.Response:
        """GET /v1/agent/services: every service of this agent, by ID (none for an anonymous ACL read)."""
        rejected = self._unknown_token(request)
        if rejected:
            return rejected
        if self.token is not None and self._token(request) is _ANONYMOUS:
            return web.json_response({}, headers={"X-Consul-Results-Filtered-By-ACLs": "true"})
        return web.json_response({service_id: dict(service) for service_id, service in self._services.items()})

    async def _health_service(self, request: web.Request) -> web.Response:
        """GET /v1/health/service/<name>, blocking when asked to."""
        rejected = self._unknown_token(request)
        if rejected:
            return rejected
        name = request.match_info["name"]
        params = self._health_params(request)
        if isinstance(params, web.Response):
            return params
        min_index, wait, passing = params
        if min_index:
            await self._block(name, min_index, wait)
        entries = self._entries(name, passing, request.query.getall("tag", []))
        headers = {
            "X-Consul-Index": str(self._index_of(name)),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": "leader",
            "X-Consul-Query-Backend": "blocking-query",
        }
        if entries and self.token is not None and self._token(request) is _ANONYMOUS:
            entries, headers["X-Consul-Results-Filtered-By-ACLs"] = [], "true"
        return web.json_response(entries, headers=headers)

    def _health_params(self, request: web.Request) -> tuple[int, float, bool] | web.Response:
        """(index, wait seconds, passing) from the query string, or Consul's 400."""
        query = request.query
        try:
            min_index = int(query.get("index", "0"))
        except ValueError:
            return text(400, "Invalid index")
        wait = go_duration(query["wait"]) if "wait" in query else DEFAULT_WAIT
        if wait is None:
            return text(400, "Invalid wait time")
        passing = query.get("passing", "false")
        if passing not in _TRUE + _FALSE:
            return text(400, "Invalid value for ?passing")
        return min_index, min(wait, MAX_WAIT), passing in _TRUE

    async def _block(self, name: str, min_index: int, wait: float) -> None:
        """Hold a blocking query until the service's index passes min_index or the wait (plus jitter) ends."""
        deadline = self._loop.time() + wait + random.uniform(0, wait / 16)
        while self._index_of(name) <= min_index:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _entries(self, name: str, passing: bool, tags: list[str]) -> list[dict[str, Any]]:
        """The /v1/health/service entries of one service name."""
        entries = []
        for service in self._services.values():
            if service["Service"] != name or not set(tags) <= set(service["Tags"]):
                continue
            checks = [self._serf_health()] + [c for c in self._checks.values() if c["ServiceID"] == service["ID"]]
            if passing and any(check["Status"] != "passing" for check in checks):
                continue
            entries.append({"Node": self._node(), "Service": dict(service), "Checks": checks})
        return entries

    def _node(self) -> dict[str, Any]:
        """The agent's own node, as /v1/health/service shows it."""
        return {
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
            "Node": self.node,
            "Address": self.node_address,
            "Datacenter": "dc1",
            "TaggedAddresses": {"lan": self.node_address, "wan": self.node_address},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 5,
            "ModifyIndex": 5,
        }

    def _serf_health(self) -> dict[str, Any]:
        """The node-level check every entry carries; the agent is alive, so it passes."""
        return {
            "Node": self.node,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Definition": {},
            "CreateIndex": 5,
            "ModifyIndex": 5,
        }

    def _index_of(self, name: str) -> int:
        """The index of a service name's last change, or the agent's index for a name never seen."""
        return max(self._service_index.get(name, self._index), 1)

    def _bump(self, name: str) -> None:
        """Record a change to a service name at the current index and wake its blocking queries."""
        self._service_index[name] = self._index
        self._changed.set()
        self._changed = asyncio.Event()

    async def _set_status(self, service_id: str, status: str) -> None:
        """Flip a service's checks."""
        service = self._services[service_id]
        self._index += 1
        for check_id, check in self._checks.items():
            if check["ServiceID"] == service_id:
                check["Status"], check["ModifyIndex"] = status, self._index
                if status == "critical":
                    self._critical_since.setdefault(check_id, time.monotonic())
                else:
                    self._critical_since.pop(check_id, None)
        self._bump(service["Service"])

    async def _touch(self, service_id: str) -> None:
        """Bump a service's index, changing nothing else."""
        self._index += 1
        self._bump(self._services[service_id]["Service"])

    async def _forget(self) -> None:
        """Drop all state; the index starts over."""
        for service_id in list(self._services):
            self._drop_checks(service_id)
        self._services.clear()
        self._checks.clear()
        self._service_index.clear()
        self._index = 1


class Watcher:
    """Runs ``registry.watch()`` on its own event loop in a thread, the way the proxy consumes it."""

    def __init__(self, registry: Registry) -> None:
        self.seen: list[list[Instance]] = []  # every set watch() yielded, oldest first
        self.loop_errors: list[str] = []  # what the loop's exception handler heard, e.g. unclosed sessions
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(str(context["message"])))
        self._task = self._loop.create_task(self._consume(registry))
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    @property
    def latest(self) -> list[Instance] | None:
        """The last set yielded, or None before the first."""
        return self.seen[-1] if self.seen else None

    def ids(self) -> set[str] | None:
        """The IDs in the last set yielded, or None before the first."""
        latest = self.latest
        return None if latest is None else {instance.id for instance in latest}

    def stop(self) -> None:
        """Cancel the watch (closing its generator), end the thread and collect what it left behind."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)
        gc.collect()  # an unclosed aiohttp session reports itself to the loop's exception handler here
        self._loop.close()

    def _run(self) -> None:
        """The thread: drive the loop until the watch is cancelled."""
        asyncio.set_event_loop(self._loop)
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)

    async def _consume(self, registry: Registry) -> None:
        """Collect every set the registry yields."""
        async for instances in registry.watch():
            self.seen.append(instances)


def main() -> None:
    """Usage: python consul_double.py HOST PORT  (an agent that runs its checks, until SIGTERM; for the
    multi-host test, where it stands on one of the network namespaces). Prints its URL once it listens."""
    import signal
    import sys

    double = ConsulDouble(run_checks=True, host=sys.argv[1], port=int(sys.argv[2]), reap_interval=1.0)
    double.start()
    print(double.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    double.close()


if __name__ == "__main__":
    main()
