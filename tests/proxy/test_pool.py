"""The pool as its users see it: spreading, p2p lookups, joining, leaving, dying, restarting."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import encode, iou, sample, scrape, wait_until, write_sleepy_model

pytestmark = pytest.mark.slow  # every test here starts processes

IMAGE = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
PNG = {"Content-Type": "image/png"}


def post(url: str, data: bytes = IMAGE, **headers: str) -> requests.Response:
    return requests.post(url + "/predict", data=data, headers={**PNG, **headers}, timeout=30)


def test_requests_spread_evenly_over_the_workers(make_pool) -> None:
    pool = make_pool(3)
    served = Counter(post(pool.proxy.url).headers["X-Worker-ID"] for _ in range(30))
    assert sorted(served.values()) == [10, 10, 10] and set(served) == pool.registered()


def test_answers_come_back_unchanged_with_ids(make_pool) -> None:
    pool = make_pool(1)
    through = post(pool.proxy.url, **{"X-Request-ID": "req-42"})
    direct = post(pool.workers[0].url)
    assert through.status_code == 200 and through.headers["X-Request-ID"] == "req-42"
    assert (
        through.headers["X-Worker-ID"] == direct.headers["X-Worker-ID"] == pool.workers[0].url.removeprefix("http://")
    )
    assert through.json()["predictions"] == direct.json()["predictions"]
    assert post(pool.proxy.url).headers["X-Request-ID"]  # made up when the client sent none
    error = requests.post(pool.proxy.url + "/predict", data=b"x", headers={"Content-Type": "text/plain"}, timeout=5)
    assert error.status_code == 415 and error.json()["error"]["code"] == "unsupported_media_type"


def test_p2p_lookups_rotate_and_the_worker_answers_directly(make_pool) -> None:
    pool = make_pool(3)
    found = [requests.get(pool.proxy.url + "/lookup", params={"model": "sleepy"}, timeout=5).json() for _ in range(3)]
    assert len({f["worker_id"] for f in found}) == 3 and all(f["model"] == "sleepy" for f in found)
    for f in found:
        response = post(f["url"])
        assert response.status_code == 200 and response.headers["X-Worker-ID"] == f["worker_id"]


def test_unknown_model_is_404_and_no_workers_503_at_once(start_proxy, make_pool) -> None:
    pool = make_pool(1)
    lookup = requests.get(pool.proxy.url + "/lookup", params={"model": "nope"}, timeout=5)
    assert lookup.status_code == 404 and lookup.json()["error"]["code"] == "model_not_found"
    assert "sleepy" in lookup.json()["error"]["message"]
    routed = requests.post(pool.proxy.url + "/models/nope/predict", data=IMAGE, headers=PNG, timeout=5)
    assert routed.status_code == 404
    empty = start_proxy("--registry-token", "x")
    started = time.monotonic()
    response = post(empty.url)
    assert response.status_code == 503 and time.monotonic() - started < 1.0
    assert response.json()["error"]["code"] == "no_worker" and response.headers["Retry-After"] == "1"
    assert requests.get(empty.url + "/readyz", timeout=5).status_code == 503


def test_a_worker_started_later_joins_the_rotation(make_pool) -> None:
    pool = make_pool(2)
    late = pool.add_worker()  # returns once its /readyz is 200
    ready_at = time.monotonic()
    late_id = late.url.removeprefix("http://")
    wait_until(lambda: late_id in pool.registered(), timeout=5)
    assert time.monotonic() - ready_at < 2.0
    assert late_id in {post(pool.proxy.url).headers["X-Worker-ID"] for _ in range(6)}


def test_registration_needs_the_token(make_pool) -> None:
    pool = make_pool(1)
    body = {"url": "http://127.0.0.1:9", "models": {"sleepy": "1"}, "ttl": 10}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + "dGVzdA=="}):
        response = requests.put(pool.proxy.url + "/registry/instances/rogue", json=body, headers=headers, timeout=5)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    rogue = pool.add_worker("--registry-token", "wrong")  # the last flag wins
    wait_until(lambda: "refused our token" in rogue.output())
    assert rogue.url.removeprefix("http://") not in pool.registered()
    assert "registry request refused: missing or wrong token" in pool.proxy.output()


class Load:
    """Clients posting through the proxy back to back, counting every answer."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.statuses, self.stop = url, Counter[int](), threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    status = session.post(self.url + "/predict", data=IMAGE, headers=PNG, timeout=30).status_code
                except requests.RequestException:
                    status = 0
                self.statuses[status] += 1

    def finish(self) -> Counter[int]:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        return self.statuses


SIGNALS = [pytest.param(signal.SIGTERM, id="sigterm"), pytest.param(signal.SIGKILL, id="sigkill")]


@pytest.mark.parametrize("sig", SIGNALS)
def test_stopping_or_killing_a_worker_under_load_fails_no_request(make_pool, sig: signal.Signals) -> None:
    pool = make_pool(3)
    load = Load(pool.proxy.url)
    wait_until(lambda: sum(load.statuses.values()) >= 50)
    victim = pool.workers[0]
    victim.proc.send_signal(sig)
    victim.proc.wait(30)
    before = sum(load.statuses.values())
    wait_until(lambda: sum(load.statuses.values()) >= before + 50)
    statuses = load.finish()
    assert set(statuses) == {200}, statuses
    wait_until(lambda: victim.url.removeprefix("http://") not in pool.registered(), timeout=5)
    if sig == signal.SIGTERM:
        assert victim.proc.returncode == 0 and "deregistered" in victim.output()


def test_a_proxy_restart_is_survived(make_pool, start_proxy) -> None:
    pool = make_pool(2)
    port = pool.proxy.port
    pool.proxy.stop()
    pool.proxy = start_proxy("--registry-token", "test-registry-token", port=port)
    pool.wait_for(2, timeout=5)  # the workers' next renewal registers them again
    assert post(pool.proxy.url).status_code == 200


def test_a_large_upload_passes_whole(make_pool) -> None:
    pool = make_pool(1)
    noise = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    data = encode(noise, "PNG")
    assert len(data) > 8 * 1024 * 1024
    response = post(pool.proxy.url, data)
    assert response.status_code == 200, response.text


def test_full_chain_on_the_real_model(make_pool, model_repository: Path, jpegs: dict[str, bytes]) -> None:
    pool = make_pool(0)
    pool.add_worker(model="ssd-mobilenet-v2", repository=model_repository)
    pool.wait_for(1)
    response = requests.post(
        pool.proxy.url + "/models/ssd-mobilenet-v2/predict",
        data=jpegs["chelsea"],
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    best = response.json()["predictions"][0]
    assert best["label"] == "cat" and iou(best["box"], {"x": 9, "y": 0, "width": 399, "height": 297}) > 0.8


def test_a_client_dropping_its_upload_ejects_no_worker(make_pool) -> None:
    import socket
    from urllib.parse import urlsplit

    pool = make_pool(2)
    address = urlsplit(pool.proxy.url)
    for _ in range(2):  # once per worker in the rotation
        with socket.create_connection((address.hostname, address.port)) as sock:
            head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {4 << 20}\r\n\r\n"
            sock.sendall(head.encode() + b"\0" * (1 << 20))  # a quarter of what it promised, then gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    wait_until(lambda: pool.proxy.output().count("status=400") == 2)  # both uploads seen to their end
    assert len(pool.registered()) == 2
    assert post(pool.proxy.url).status_code == 200
    assert "ejected" not in pool.proxy.output()


def test_a_registration_with_a_nan_ttl_is_refused_and_the_pool_keeps_following(make_pool) -> None:
    pool = make_pool(1)
    body = '{"url": "http://127.0.0.1:9", "models": {"sleepy": "1"}, "ttl": NaN}'
    headers = {"Authorization": "Bearer test-registry-token", "Content-Type": "application/json"}
    refused = requests.put(pool.proxy.url + "/registry/instances/odd", data=body, headers=headers, timeout=5)
    assert refused.status_code == 400
    pool.add_worker()
    pool.wait_for(2)


def test_a_worker_with_a_full_queue_stays_in_the_rotation(make_pool, tmp_path: Path) -> None:
    pool = make_pool(0)
    small = write_sleepy_model(tmp_path / "small", seconds=0.3, max_batch_size=1, max_queue_size=1)
    pool.add_worker(repository=small)
    pool.wait_for(1)

    with ThreadPoolExecutor(12) as threads:
        statuses = [r.status_code for r in threads.map(lambda _: post(pool.proxy.url), range(12))]
    assert statuses.count(503) >= 3 and 200 in statuses  # its queue overflowed, three times and more in a row
    assert sample(scrape(pool.proxy.url), "visionpool_proxy_ejections_total") == 0
    assert post(pool.proxy.url).status_code == 200  # not ejected: served at once, not 10 s of 503 no_worker
