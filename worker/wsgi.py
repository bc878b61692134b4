"""Flask behind the front door: the whole body first, then the app in a bounded pool of threads.

Usage:
    http = wsgi_app(flask_app, door, threads=32)     # an aiohttp Application serving every path
    await door.start(http, sock)

A request gets a thread only once the front door holds its whole body (proxy/frontdoor.py), and
the app's whole answer is built in that thread and sent by the event loop, so neither a slow
upload nor a slow reader ever holds a thread. Reads (GET, HEAD: health, readiness, models,
metrics) have threads of their own, so a health check never waits behind predictions.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from visionpool.client.wire import PREDICT
from visionpool.serving.frontdoor import ENCODINGS, FrontDoor, error_middleware
from visionpool.serving.tickets import Tickets

Answer = tuple[int, list[tuple[str, str]], bytes]
Direct = Callable[[web.Request], Callable[[bytes, Executor], Awaitable[Answer]] | None]  # worker/fast.py
READ_METHODS = ("GET", "HEAD", "OPTIONS")
READ_THREADS = 2
DROPPED_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


Other = Callable[[web.Request, bytes, ThreadPoolExecutor], Awaitable[web.StreamResponse]]


def wsgi_app(
    app: Callable[..., Iterable[bytes]],
    door: FrontDoor,
    threads: int,
    guard: Guard | None = None,
    direct: Direct | None = None,
) -> web.Application:
    """An aiohttp app that hands every request, body whole, to the WSGI ``app`` in a thread; ``guard`` may
    refuse a request (a ServiceError) before its body is read; ``direct`` may take a request from the app
    (answering it from its body, given the same threads: worker/fast.py)."""
    reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read")

    async def call_app(request: web.Request, body: bytes, work: ThreadPoolExecutor) -> web.StreamResponse:
        pool = reads if request.method in READ_METHODS else work
        answer = await asyncio.get_running_loop().run_in_executor(pool, call, app, environ(request, body))
        return respond(answer)

    return http_app(door, threads, call_app, guard, direct, [reads])


def http_app(
    door: FrontDoor,
    threads: int,
    other: Other,
    guard: Guard | None = None,
    direct: Direct | None = None,
    pools: Sequence[ThreadPoolExecutor] = (),
) -> web.Application:
    """An aiohttp app serving every path: ``guard`` may refuse a request before its body is read, ``direct``
    may answer it from its body (given a pool of ``threads`` threads; at most ``threads`` such answers at once);
    ``other`` answers the rest (given the body and that pool). ``pools`` stop with it."""
    work = ThreadPoolExecutor(threads, thread_name_prefix="request")

    slots = asyncio.Semaphore(threads)  # direct answers under way at once, in the threads or in the loop itself

    async def handle(request: web.Request) -> web.StreamResponse:
        if guard is not None and (waiting := guard(request)) is not None:
            await waiting
        answer = direct(request) if direct is not None else None
        async with door.body(request) as body:
            if answer is None:
                return await other(request, body, work)
            async with slots:  # the rest wait their turn, as they would for a thread
                return respond(await answer(body, work))

    async def stop_threads(_: web.Application) -> None:
        for pool in (work, *pools):
            pool.shutdown(wait=False, cancel_futures=True)

    http = web.Application(middlewares=[error_middleware], **door.app_options())
    http.router.add_route("*", "/{path:.*}", handle, expect_handler=door.expect)
    http.on_cleanup.append(stop_threads)
    return http


def respond(answer: Answer) -> web.Response:
    status, headers, payload = answer
    return web.Response(status=status, headers=headers, body=payload)


UPLOADS = re.compile(r"^/models/(?P<name>[^/]+)/predict$|^/v2/models/(?P<v2>[^/]+)(?:/versions/[^/]+)?/infer$")


Guard = Callable[[web.Request], Awaitable[None] | None]  # refuses a request (a ServiceError), maybe after a wait
Take = Callable[[str, float, float], Awaitable[None]]  # counts a request against a ticket's rate, elsewhere


def ticket_guard(tickets: Tickets, default_model: str, take: Take | None = None) -> Guard:
    """Uploads (predict, v2 infer) need a ticket the proxy signed for this worker and that model; the rest of
    the API (health, models, metrics, the page) stays open. ``take``: the ticket's rate is counted there (a
    front process's guard: the engine process keeps one count for all the fronts)."""

    def guard(request: web.Request) -> Awaitable[None] | None:
        if request.method != "POST":
            return None
        if request.path == PREDICT:
            model = default_model
        elif match := UPLOADS.match(request.path):
            model = unquote(match.group("name") or match.group("v2"))
        else:
            return None
        if take is None:
            tickets.admit(request.headers.get("Authorization"), model)
            return None
        payload, signature = tickets.check(request.headers.get("Authorization"), model)
        return take(signature, float(payload["r"]), float(payload["b"]))

    return guard


def environ(request: web.Request, body: bytes) -> dict[str, Any]:
    """The WSGI environ of a request whose body is whole (PEP 3333)."""
    where = request.transport.get_extra_info("sockname") if request.transport else None
    host, port = where[:2] if isinstance(where, tuple) else ("", 0)  # a Unix socket's is a path
    env: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": request.rel_url.raw_query_string,
        "SERVER_NAME": str(host),
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
        "REMOTE_ADDR": request.remote or "",
        "CONTENT_LENGTH": str(len(body)),  # a chunked upload has a length now
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    # the front door decompressed the body (within its byte limits): the app gets it plain, without the header
    # (the app decompressing again answered 400 "does not decompress")
    decoded = request.headers.get("Content-Encoding", "").strip().lower() in ENCODINGS
    for raw_name, raw_value in request.raw_headers:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name in ("CONTENT_LENGTH", "TRANSFER_ENCODING") or (name == "CONTENT_ENCODING" and decoded):
            continue
        key = name if name == "CONTENT_TYPE" else f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        env[key] = f"{env[key]},{value}" if key in env else value
    return env


def call(app: Callable[..., Iterable[bytes]], env: dict[str, Any]) -> Answer:
    """Run the WSGI app once and collect its whole answer."""
    started: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [int(status.split(" ", 1)[0]), headers]
        return written.append

    result = app(env, start_response)
    try:
        payload = b"".join([*written, *result])
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    return status, [(k, v) for k, v in headers if k.lower() not in DROPPED_HEADERS], payload
