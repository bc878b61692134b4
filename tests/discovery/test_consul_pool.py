"""A real worker and a real proxy finding each other through Consul (the agent double)."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import encode, wait_until, write_sleepy_model

pytestmark = pytest.mark.slow  # every test here starts processes


def test_worker_and_proxy_meet_through_consul(consul, start_worker, start_proxy, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", seconds=0.01)
    consul_flags = ["--registry", "consul", "--consul-url", consul.url]
    proxy = start_proxy(*consul_flags)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), *consul_flags)
    worker_id = worker.url.removeprefix("http://")

    def registered() -> list[str]:
        return [w["id"] for w in requests.get(proxy.url + "/workers", timeout=5).json()["workers"]]

    wait_until(lambda: registered() == [worker_id], timeout=10)
    image = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    answer = requests.post(proxy.url + "/predict", data=image, headers={"Content-Type": "image/png"}, timeout=10)
    assert answer.status_code == 200 and answer.headers["X-Worker-ID"] == worker_id
    assert requests.get(proxy.url + "/lookup", params={"model": "sleepy"}, timeout=5).json()["url"] == worker.url

    worker.stop(signal.SIGTERM)
    assert worker.proc.returncode == 0
    wait_until(lambda: registered() == [], timeout=10)  # deregistered, and the blocking query told the proxy
