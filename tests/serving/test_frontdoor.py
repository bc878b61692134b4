"""The front door against slow, oversized and hostile clients: raw sockets on a real server in this process."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from helpers import wait_until

from visionpool.serving.frontdoor import FrontDoor, Limits, error_middleware

FAST = Limits(max_body_bytes=1000, header_timeout=0.5, body_timeout=0.5, max_connections=8, max_buffered_bytes=5000)


class Served:
    """A FrontDoor serving an echo app (it answers the body's length) on loopback, from a thread."""

    def __init__(self, limits: Limits) -> None:
        self.door = FrontDoor(limits)
        self.loop = asyncio.new_event_loop()
        self.sock = self.door.bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.hold = asyncio.Event()  # handlers wait on it while it is clear (for "busy connection" tests)
        self.hold.set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.call(self.door.start(self.app(), self.sock))

    def app(self) -> web.Application:
        async def echo(request: web.Request) -> web.Response:
            async with self.door.body(request) as body:
                await self.hold.wait()
                return web.json_response({"length": len(body)})

        app = web.Application(middlewares=[error_middleware], **self.door.app_options())
        app.router.add_route("*", "/{path:.*}", echo, expect_handler=self.door.expect)
        return app

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def stop(self) -> None:
        if not self.loop.is_running():
            return
        self.loop.call_soon_threadsafe(self.hold.set)
        self.call(self.door.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        wait_until(lambda: not self.loop.is_running())


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Start front doors with the given limits; all stopped after the test."""
    started: list[Served] = []

    def start(limits: Limits = FAST) -> Served:
        started.append(Served(limits))
        return started[-1]

    yield start
    for served in started:
        served.stop()


def head(length: int | None = None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n{size}{extra}\r\n".encode()


def answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Read one whole HTTP answer: status, headers (lower-case names), JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer after {data!r}"
        data += chunk
    top, rest = data.split(b"\r\n\r\n", 1)
    lines = top.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest[:length] or b"null")


def closed(sock: socket.socket) -> bool:
    """The server closed the connection (what is left to read is nothing, or a reset)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_a_body_within_limits_gets_through(serve) -> None:
    served = serve()
    with served.connect() as sock:
        sock.sendall(head(5) + b"hello")
        assert answer(sock)[0::2] == (200, {"length": 5})
        sock.sendall(head(3) + b"abc")  # the same connection, kept alive
        assert answer(sock)[0::2] == (200, {"length": 3})


def test_a_declared_oversized_body_is_refused_before_it_is_sent(serve) -> None:
    served = serve()
    with served.connect() as sock:
        started = time.monotonic()
        sock.sendall(head(25_000_000))  # promises 25 MB, sends none of it
        status, headers, body = answer(sock)
        assert time.monotonic() - started < 5.0
        assert status == 413 and body["error"]["code"] == "payload_too_large" and "1,000" in body["error"]["message"]
        assert headers["connection"] == "close"
    assert served.door.events["too_large"] == 1


def test_a_chunked_body_is_refused_as_it_passes_the_limit(serve) -> None:
    served = serve()
    with served.connect() as sock:
        sock.sendall(head(extra="Transfer-Encoding: chunked\r\n"))
        for _ in range(3):
            sock.sendall(b"200\r\n" + b"x" * 512 + b"\r\n")  # 1,536 bytes in, no end in sight
        status, _, body = answer(sock)
        assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_expect_100_continue_is_refused_without_continue(serve) -> None:
    served = serve()
    with served.connect() as sock:
        sock.sendall(head(5000, "Expect: 100-continue\r\n"))
        status, _, body = answer(sock)  # the first thing back is the refusal, not "100 Continue"
        assert status == 413
    with served.connect() as sock:
        sock.sendall(head(4, "Expect: 100-continue\r\n"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"four")
        assert answer(sock)[0::2] == (200, {"length": 4})


def test_a_slow_body_gets_408(serve) -> None:
    served = serve()
    with served.connect() as sock:
        sock.sendall(head(100) + b"x")  # one byte of a hundred, then nothing
        status, _, body = answer(sock)
        assert status == 408 and body["error"]["code"] == "request_timeout"
    assert served.door.events["body_timeout"] == 1


def test_a_slow_head_gets_408_and_a_silent_connection_is_closed(serve) -> None:
    served = serve()
    with served.connect() as slow, served.connect() as silent:
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        status, _, body = answer(slow)
        assert status == 408 and "head" in body["error"]["message"]
        assert closed(silent)
    assert served.door.events["head_timeout"] == 1


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(serve) -> None:
    served = serve()
    with served.connect() as sock:
        sock.sendall(head(1) + b"x")
        assert answer(sock)[0] == 200
        started = time.monotonic()
        assert closed(sock) and time.monotonic() - started < 5


def test_over_the_connection_cap_the_oldest_waiting_connection_makes_room(serve) -> None:
    served = serve()
    idle = [served.connect() for _ in range(8)]
    wait_until(lambda: served.door.connections() == 8)
    with served.connect() as newcomer:
        newcomer.sendall(head(2) + b"ok")
        assert answer(newcomer)[0] == 200
    assert closed(idle[0]) and served.door.events["evicted"] == 1
    for sock in idle:
        sock.close()


def test_when_every_connection_is_busy_a_newcomer_gets_503(serve) -> None:
    served = serve()
    served.loop.call_soon_threadsafe(served.hold.clear)  # every request is held in its handler
    busy = [served.connect() for _ in range(8)]
    for sock in busy:
        sock.sendall(head(1) + b"x")
    wait_until(lambda: served.door.connections() == 8)
    time.sleep(0.05)  # the heads are parsed
    with served.connect() as newcomer:
        status, headers, body = answer(newcomer)
        assert status == 503 and body["error"]["code"] == "busy" and headers["retry-after"] == "1"
    served.loop.call_soon_threadsafe(served.hold.set)
    for sock in busy:
        assert answer(sock)[0] == 200
        sock.close()


def test_bodies_held_at_once_are_bounded(serve) -> None:
    served = serve(Limits(max_body_bytes=1000, max_buffered_bytes=1500, header_timeout=2, body_timeout=2))
    served.loop.call_soon_threadsafe(served.hold.clear)
    with served.connect() as first, served.connect() as second:
        first.sendall(head(1000) + b"x" * 1000)  # held while its handler waits
        wait_until(lambda: served.door.buffered == 1000)
        second.sendall(head(1000) + b"y" * 1000)
        status, _, body = answer(second)
        assert status == 503 and body["error"]["code"] == "unavailable"
        served.loop.call_soon_threadsafe(served.hold.set)
        assert answer(first)[0] == 200
    wait_until(lambda: served.door.buffered == 0)


def test_stopping_answers_bodies_still_arriving_503(serve) -> None:
    served = serve(Limits(body_timeout=30, header_timeout=30))
    with served.connect() as sock:
        sock.sendall(head(100) + b"x")
        wait_until(lambda: len(served.door._arriving) == 1)
        served.stop()
        status, _, body = answer(sock)
        assert status == 503 and "shutting down" in body["error"]["message"]


@pytest.mark.parametrize(
    ("encoding", "body", "status", "words"),
    [
        pytest.param("gzip", gzip.compress(b"x" * 1000), 200, "", id="gzip"),
        pytest.param("deflate", zlib.compress(b"x" * 1000), 200, "", id="deflate"),
        pytest.param("deflate", zlib.compress(b"x" * 1000)[:-8] + b"garbage!", 400, "does not decompress", id="bad"),
        pytest.param("gzip", gzip.compress(b"x" * 1000)[:-20], 400, "does not end", id="cut-short"),
        pytest.param("gzip", gzip.compress(b"x" * 1000) + b"extra", 400, "followed by other bytes", id="trailing"),
        pytest.param("gzip", gzip.compress(b"\0" * 3_000_000), 413, "", id="bomb"),
    ],
)
def test_compressed_bodies_are_decompressed_within_the_limits(serve, encoding, body, status, words) -> None:
    served = serve(dataclasses.replace(FAST, max_body_bytes=2_000_000, max_buffered_bytes=10_000_000, body_timeout=5))
    with served.connect() as sock:
        sock.sendall(head(len(body), f"Content-Encoding: {encoding}\r\n") + body)
        started = time.monotonic()
        code, _, said = answer(sock)
    assert time.monotonic() - started < 4  # answered at once, never at the body deadline
    assert code == status and words in json.dumps(said)
    if status == 200:
        assert said == {"length": 1000}
