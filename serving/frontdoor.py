"""The pool's front door: the HTTP server both services stand behind, so no client can take them down.

Usage:
    door = FrontDoor(Limits.of(settings))
    app = web.Application(middlewares=[error_middleware], **door.app_options())
    app.router.add_post("/predict", handler, expect_handler=door.expect)
    async with door.body(request) as body: ...       # in a handler: the whole body, or 413 / 408 / 503
    await door.start(app, door.bind(host, port))     # bind early: a port in use fails before anything loads
    await door.stop()                                # stop listening, drain, close

The proxy serves its aiohttp app through it, and the worker its Flask app (worker/wsgi.py),
so a slow or hostile client costs a socket and a little memory, never a thread or a worker:
- A request's head must arrive within ``header_timeout`` of the connection (or of the previous
  answer, on a kept-alive connection): 408 when part of it came, a silent close when nothing did.
  This is aiohttp's keep-alive timer, which bytes do not reset; an idle keep-alive connection
  is closed after the same time. Over-long lines and headers get aiohttp's 400.
- A body is read whole before anything else happens: 413 from Content-Length before reading
  (and before any ``100 Continue``), 413 as soon as a chunked body passes ``max_body_bytes``, 408
  when the whole body misses ``body_timeout``; 503 busy when all connections together already
  hold ``max_buffered_bytes`` of bodies. An early answer is followed by a lingering close, so the
  client reads it instead of a reset.
- Beyond ``max_connections`` the oldest connection waiting for a request is closed; when every
  connection is busy, the newcomer gets 503 at once.
- At shutdown, bodies still arriving are answered 503 at once; requests whose body is in get
  ``drain_timeout`` to finish.

It relies on a few private attributes of aiohttp's RequestHandler (``_waiter``, ``_messages``,
``_request_in_progress``, ``_next_keepalive_close_time``, ``_force_close``) and Server
(``_kwargs``); tests/proxy/test_frontdoor.py checks each behaviour, so an aiohttp upgrade that
moves them fails loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import resource
import socket
import ssl
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientPayloadError, web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from visionpool.client.wire import (
    BadRequest,
    Code,
    Header,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    ServiceUnavailable,
    UploadIncomplete,
    error_body,
)

from .settings import ServiceSettings

logger = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LINGERING_TIME = 2.0  # seconds an early answer's connection keeps reading (and dropping) before it closes
CHUNK = 256 * 1024


def canned(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP answer written straight to a socket, where no request object exists yet."""
    body = json.dumps(error_body(code, message)).encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    retry = f"{Header.RETRY_AFTER}: 1\r\n" if status == 503 else ""
    return (head + retry + "Connection: close\r\n\r\n").encode() + body


HEAD_TIMEOUT = canned(408, "Request Timeout", Code.REQUEST_TIMEOUT, "The request head did not arrive in time.")
NO_ROOM = canned(503, "Service Unavailable", Code.BUSY, "Every connection is busy; retry.")


# Content-Encodings the front door decompresses as the body arrives (zlib's window bits for each); the app
# gets the plain body without the header. Others pass through as sent, header and all.
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
DEFAULTS = {field.name: field.default for field in dataclasses.fields(ServiceSettings)}


@dataclass(frozen=True)
class Limits:
    """What the front door allows one client, and all of them together."""

    max_body_bytes: int = DEFAULTS["max_body_bytes"]  # each default is the settings' (one place: settings.py)
    header_timeout: float = DEFAULTS["header_timeout"]
    body_timeout: float = DEFAULTS["body_timeout"]
    max_connections: int = DEFAULTS["max_connections"]
    max_buffered_bytes: int = DEFAULTS["max_buffered_bytes"]
    drain_timeout: float = DEFAULTS["drain_timeout"]

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The limits a service's settings give (ServiceSettings has every field)."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


class GuardedHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, plus a 408 for a slow head and a cap on connections."""

    def __init__(self, manager: web.Server, door: FrontDoor, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.door = door
        self.head_bytes = 0  # bytes of a request head received while no request was complete

    def waiting(self) -> bool:
        """Idle, or part-way through a head: no request of this connection is being handled."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._request_in_progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self._manager.connections) > self.door.limits.max_connections:  # type: ignore[union-attr]
            self.make_room()

    def make_room(self) -> None:
        """Close the oldest connection waiting for a request; when none waits, refuse this one."""
        for other in self._manager.connections:  # type: ignore[union-attr] # oldest first
            if other is not self and isinstance(other, GuardedHandler) and other.waiting():
                self.door.events["evicted"] += 1
                other.force_close()
                return
        self.door.events["refused"] += 1
        if self.transport is not None:
            self.transport.write(NO_ROOM)
        self.force_close()

    def data_received(self, data: bytes) -> None:
        if self._waiter is not None and not self._messages:  # between requests, or inside a head
            self.head_bytes += len(data)
        super().data_received(data)
        if self._messages:
            self.head_bytes = 0

    def _process_keepalive(self) -> None:
        due = self._loop.time() >= self._next_keepalive_close_time
        if due and self.waiting() and self.head_bytes and self.transport is not None and not self._force_close:
            self.door.events["head_timeout"] += 1
            self.transport.write(HEAD_TIMEOUT)
        super()._process_keepalive()


class FrontDoor:
    """One service's HTTP server with its limits; counts what it refused in ``events``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.events: Counter[str] = Counter()  # evicted, refused, head_timeout, body_timeout, too_large, busy
        self.buffered = 0  # bytes of request bodies held now
        self._arriving: set[asyncio.Task[Any]] = set()  # handlers reading a body now
        self._draining = False
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None

    def app_options(self) -> dict[str, Any]:
        """Keyword arguments for web.Application: aiohttp's own body limit, as a second line."""
        return {"client_max_size": self.limits.max_body_bytes}

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """Expect: 100-continue: refuse a body over the limit before the client sends it (runs before middlewares)."""
        try:
            self._check_declared(request)
        except ServiceError as error:
            return error_response(error, request.path)
        if request.version == (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp's own handler does: the answer has not started
        return None

    @contextlib.asynccontextmanager
    async def body(self, request: web.Request) -> AsyncIterator[bytes]:
        """The whole body, held (and counted against max_buffered_bytes) until the block ends."""
        held = 0
        try:
            self._check_declared(request)
            held = self._reserve(request.content_length or 0)
            data, held = await self._read(request, held)
            yield data
        finally:
            self.buffered -= held

    def bind(self, host: str, port: int, shared: bool = False) -> socket.socket:
        """The listening socket, bound now (so a port in use fails before models load). ``shared``: a socket
        bound with SO_REUSEPORT and not listening, which holds the port for processes (of this user) that each
        listen on it with a socket of their own from ``listen_shared``: the kernel spreads connections over them."""
        _raise_file_limit()
        if not shared:
            sock = socket.create_server((host, port), backlog=2048, family=_family(host))
        else:  # first as a plain socket: a port others listen on, with SO_REUSEPORT or not, is in use for us
            with socket.create_server((host, port), family=_family(host)) as probe:
                port = probe.getsockname()[1]  # port 0: the one the kernel chose
            sock = socket.socket(_family(host), socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        sock.set_inheritable(False)
        return sock

    def listen_shared(self, host: str, port: int) -> socket.socket:
        """One of the listening sockets on a port held by ``bind(..., shared=True)``."""
        _raise_file_limit()
        return socket.create_server((host, port), backlog=2048, family=_family(host), reuse_port=True)

    async def start(self, app: web.Application, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve ``app`` on ``sock`` (over TLS with ``tls``) until stop()."""
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.limits.header_timeout,  # armed at connect, not reset by bytes: the head deadline
            lingering_time=LINGERING_TIME,
            shutdown_timeout=self.limits.drain_timeout,
            auto_decompress=False,  # _read decompresses, so that a broken body is a 400, never a hang
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        options = server._kwargs

        def connection() -> GuardedHandler:
            return GuardedHandler(server, self, loop=asyncio.get_running_loop(), **options)

        self._server = await asyncio.get_running_loop().create_server(connection, sock=sock, backlog=2048, ssl=tls)

    async def stop(self) -> None:
        """Stop listening; answer bodies still arriving 503; let the rest finish within drain_timeout."""
        self._draining = True
        if self._server is not None:
            self._server.close()
        for task in list(self._arriving):
            task.cancel()  # _read turns exactly this cancellation into a 503
        if self._runner is not None:
            await self._runner.cleanup()

    def collector(self, service: str) -> FrontDoorCollector:
        """A Prometheus collector of what this door refused and holds, for ``service``'s registry."""
        return FrontDoorCollector(self.state, service)

    def state(self) -> DoorState:
        """What it refused so far (by event), its open connections and the body bytes it holds now."""
        return dict(self.events), self.connections(), self.buffered

    def connections(self) -> int:
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def _check_declared(self, request: web.Request) -> None:
        declared = request.content_length
        if declared is not None and declared > self.limits.max_body_bytes:
            raise self._too_large()

    def _too_large(self) -> PayloadTooLarge:
        self.events["too_large"] += 1
        return PayloadTooLarge(f"The request body is larger than the {self.limits.max_body_bytes:,} bytes accepted.")

    def _reserve(self, size: int) -> int:
        """Count ``size`` more bytes as held; 503 busy when that passes the budget."""
        if self.buffered + size > self.limits.max_buffered_bytes:
            self.events["busy"] += 1
            raise ServiceUnavailable("Too many request bodies are held at once; retry.", retry_after=1)
        self.buffered += size
        return size

    async def _read(self, request: web.Request, held: int) -> tuple[bytes, int]:
        """Read the body under one deadline, counting a body of unknown length as it comes."""
        if self._draining:
            raise ServiceUnavailable("This server is shutting down; retry.", retry_after=1)
        chunks, size = [], 0
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        decoder = zlib.decompressobj(ENCODINGS[encoding]) if encoding in ENCODINGS else None
        task = asyncio.current_task()
        assert task is not None
        self._arriving.add(task)
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while chunk := await request.content.readany():
                    if decoder is not None:  # bounded: a small body that inflates past the limit is refused
                        chunk = decoder.decompress(chunk, self.limits.max_body_bytes - size + 1)
                    size += len(chunk)
                    if size > self.limits.max_body_bytes:
                        raise self._too_large()
                    if size > held:
                        held += self._reserve(size - held)
                    chunks.append(chunk)
            if decoder is not None and (not decoder.eof or decoder.unused_data):
                said = "does not end" if not decoder.eof else "is followed by other bytes"
                raise BadRequest(f"The request body is not one whole {encoding} stream: it {said}.")
        except zlib.error:
            raise BadRequest(f"The request body does not decompress as Content-Encoding {encoding}.") from None
        except TimeoutError:
            self.events["body_timeout"] += 1
            raise RequestTimeout(f"The request body did not arrive within {self.limits.body_timeout:g} s.") from None
        except asyncio.CancelledError:
            if not self._draining:
                raise
            task.uncancel()  # stop() cancelled it: the server is stopping, not this handler
            raise ServiceUnavailable("This server is shutting down; retry.", retry_after=1) from None
        except (ConnectionError, HttpProcessingError, ClientPayloadError, web_protocol.RequestPayloadError):
            raise UploadIncomplete() from None
        finally:
            self._arriving.discard(task)
        return b"".join(chunks), held


DoorState = tuple[dict[str, int], int, int]  # events so far, connections open, body bytes held


class FrontDoorCollector:
    """visionpool_<service>_front_door_events_total{event}, ..._connections, ..._buffered_bytes, read at scrape
    time from ``read`` (a door's state(), or the sum of several doors')."""

    def __init__(self, read: Callable[[], DoorState], service: str) -> None:
        self.read, self.prefix = read, f"visionpool_{service}_front_door"

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counts, connections, buffered = self.read()
        events = CounterMetricFamily(
            f"{self.prefix}_events", "Clients the front door refused or cut off, by what happened.", labels=["event"]
        )
        for event in ("evicted", "refused", "head_timeout", "body_timeout", "too_large", "busy"):
            events.add_metric([event], counts.get(event, 0))
        yield events
        yield GaugeMetricFamily(f"{self.prefix}_connections", "Open client connections.", connections)
        yield GaugeMetricFamily(f"{self.prefix}_buffered_bytes", "Request body bytes held now.", buffered)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ServiceError becomes ``{"error": {"code", "message"}}`` with its status and headers."""
    try:
        return await handler(request)
    except ServiceError as error:
        return error_response(error, request.path, cut_short=not request.content.is_eof())


def error_response(error: ServiceError, path: str, cut_short: bool = True) -> web.Response:
    """The JSON answer for an error (in the shape ``path`` calls for); when the body was not read to its end,
    the connection closes (lingering first), so what is left of it is never taken for the next request."""
    response = web.json_response(error.body(path), status=error.status, headers=error.headers)
    if cut_short or error.status in (408, 413):
        response.force_close()
    return response


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run a service's main coroutine to its exit code, on uvloop where it exists."""
    try:
        import uvloop
    except ImportError:  # Windows: the standard loop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _raise_file_limit() -> None:
    """Each connection is a file descriptor: take the hard limit, so thousands of them fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
