"""GET /metrics and the request log of a proxy."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import requests
from helpers import encode, sample, scrape, wait_until

pytestmark = pytest.mark.slow  # every test here starts processes

IMAGE = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
PNG = {"Content-Type": "image/png"}


def test_proxy_metrics_follow_the_traffic(make_pool) -> None:
    pool = make_pool(3)
    for _ in range(6):
        requests.post(pool.proxy.url + "/predict", data=IMAGE, headers=PNG, timeout=10)
    for _ in range(4):
        requests.get(pool.proxy.url + "/lookup", params={"model": "sleepy"}, timeout=5)
    requests.get(pool.proxy.url + "/lookup", params={"model": "made-up"}, timeout=5)
    seen = scrape(pool.proxy.url)
    assert sample(seen, "visionpool_proxy_requests_total", route="/predict", model="default", status="200") == 6
    assert sample(seen, "visionpool_proxy_requests_total", route="/lookup", model="unknown", status="404") == 1
    assert sample(seen, "visionpool_proxy_lookups_total", model="sleepy") == 4
    assert sample(seen, "visionpool_proxy_healthy_workers", model="sleepy") == 3
    assert sample(seen, "visionpool_proxy_bytes_total", direction="upload") == 6 * len(IMAGE)
    assert sample(seen, "visionpool_proxy_bytes_total", direction="download") > 0
    assert sample(seen, "visionpool_proxy_upstream_duration_seconds_count", model="default") == 6
    assert "route=/predict" in pool.proxy.output() and "worker=127.0.0.1:" in pool.proxy.output()


def test_a_killed_worker_shows_as_ejection_and_retry(make_pool) -> None:
    pool = make_pool(2)
    pool.workers[0].stop(signal.SIGKILL)
    for _ in range(4):
        assert requests.post(pool.proxy.url + "/predict", data=IMAGE, headers=PNG, timeout=10).status_code == 200
    seen = scrape(pool.proxy.url)
    assert sample(seen, "visionpool_proxy_ejections_total") >= 1
    assert sample(seen, "visionpool_proxy_retries_total", model="default") >= 1
    wait_until(lambda: sample(scrape(pool.proxy.url), "visionpool_proxy_healthy_workers", model="sleepy") == 1)


def test_prometheus_finds_the_workers_through_the_proxy(make_pool) -> None:
    pool = make_pool(2)
    targets = requests.get(pool.proxy.url + "/prometheus/targets", timeout=5).json()
    assert sorted(t["targets"][0] for t in targets) == sorted(w.url.removeprefix("http://") for w in pool.workers)
    assert all(t["labels"]["models"] == "sleepy" for t in targets)
