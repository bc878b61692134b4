"""The bench's wrk load: every answer counted, refusals as errors, the servers' CPU read around the run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import debian_packages

from visionpool.tools.wrk import wrk_loop

pytestmark = pytest.mark.slow  # wrk is a process


class Alternating(BaseHTTPRequestHandler):
    """Reads each upload whole, then answers 200 and 503 in turn; remembers the bodies' sizes."""

    protocol_version = "HTTP/1.1"  # keep-alive, as wrk's connections are
    served = 0
    sizes: set[int] = set()
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            Alternating.served += 1
            Alternating.sizes.add(len(body))
            status = 200 if Alternating.served % 2 else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def alternating() -> Iterator[str]:
    debian_packages(["wrk"], ["wrk"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Alternating)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    server.shutdown()
    server.server_close()


def test_wrk_sends_every_image_and_counts_refusals_as_errors(alternating: str) -> None:
    readings = iter([10.0, 10.5])  # a server's CPU seconds, before and after the measured run
    clocks = {"server": lambda: next(readings)}
    measured = wrk_loop("worker", alternating, [b"a" * 1000, b"b" * 3000], 4, 1.0, 0.0, clocks)
    total = Alternating.served
    assert Alternating.sizes == {1000, 3000}  # both images, each whole
    assert total > 20 and measured.errors > 0
    assert abs(measured.images - measured.errors) <= 4  # half refused (4 connections may be mid-request)
    assert measured.images + measured.errors <= total
    assert measured.cpu == {"server": 0.5} and 0.9 < measured.seconds < 3
    row = measured.row(0.0)
    assert row["errors"] == measured.errors and 0 < row["p50_ms"] <= row["p99_ms"]
