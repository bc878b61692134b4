"""The issue's reproductions against a real pool: oversized bodies, slow uploads, idle connections."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from helpers import encode, sample, scrape

pytestmark = pytest.mark.slow  # every test here starts processes

IMAGE = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
PNG = {"Content-Type": "image/png"}


def post(url: str, data: bytes = IMAGE) -> requests.Response:
    return requests.post(url + "/predict", data=data, headers=PNG, timeout=10)


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def trickle(url: str, count: int) -> list[socket.socket]:
    """``count`` uploads that promise 100 KB and send one byte."""
    sockets = []
    for _ in range(count):
        sock = connect(url)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\nx")
        sockets.append(sock)
    return sockets


def test_an_oversized_upload_ejects_no_worker(make_pool) -> None:
    pool = make_pool(0)
    for _ in range(2):
        pool.add_worker("--max-body-bytes", "2000000")
    pool.wait_for(2)
    refused = post(pool.proxy.url, b"\0" * 5_000_000)  # within the proxy's 20 MiB, over the workers' 2 MB
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "payload_too_large"
    started = time.monotonic()
    own = post(pool.proxy.url, b"\0" * 25_000_000)  # over the proxy's own limit: refused before any worker
    assert own.status_code == 413 and "20,971,520" in own.json()["error"]["message"]
    assert time.monotonic() - started < 10
    assert sample(scrape(pool.proxy.url), "visionpool_proxy_ejections_total") == 0
    assert len(pool.registered()) == 2 and all(post(pool.proxy.url).status_code == 200 for _ in range(4))


@pytest.mark.parametrize("target", ["worker", "proxy"])
def test_slow_uploads_hold_no_thread_and_stop_nobody(make_pool, target: str) -> None:
    pool = make_pool(0)
    worker = pool.add_worker("--threads", "4")
    pool.wait_for(1)
    url = worker.url if target == "worker" else pool.proxy.url
    slow = trickle(url, 40)  # ten times the worker's threads: once, each would have taken one
    try:
        answers = [post(url) for _ in range(10)]
        assert [a.status_code for a in answers] == [200] * 10
    finally:
        for sock in slow:
            sock.close()


def test_idle_connections_do_not_lock_anybody_out(make_pool) -> None:
    pool = make_pool(1)
    idle = [connect(url) for url in (pool.proxy.url, pool.workers[0].url) for _ in range(300)]
    try:
        assert all(post(url).status_code == 200 for url in (pool.proxy.url, pool.workers[0].url) for _ in range(3))
    finally:
        for sock in idle:
            sock.close()
