"""A real worker and a real proxy finding each other through Consul (the agent double)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import encode, wait_until, write_sleepy_model

pytestmark = pytest.mark.slow  # every test here starts processes


@pytest.fixture
def live_consul(make_consul):
    """A Consul agent double that runs the workers' HTTP checks itself; they start critical, as in Consul."""
    return make_consul(run_checks=True)


def start_pair(live_consul, start_worker, start_proxy, tmp_path: Path, seconds: float = 0.01):
    """A proxy and a worker meeting through Consul; returns once the proxy sends to the worker."""
    repository = write_sleepy_model(tmp_path / "models", seconds=seconds)
    flags = ["--registry", "consul", "--consul-url", live_consul.url]
    proxy = start_proxy(*flags)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), *flags)
    worker_id = worker.url.removeprefix("http://")
    wait_until(lambda: registered(proxy) == [worker_id], timeout=10)
    return proxy, worker, worker_id


def registered(proxy) -> list[str]:
    return [w["id"] for w in requests.get(proxy.url + "/workers", timeout=5).json()["workers"]]


IMAGE = encode(np.zeros((8, 8, 3), np.uint8), "PNG")


def post(url: str) -> requests.Response:
    return requests.post(url + "/predict", data=IMAGE, headers={"Content-Type": "image/png"}, timeout=10)


def test_an_agent_restarted_empty_gets_the_worker_back(live_consul, start_worker, start_proxy, tmp_path) -> None:
    proxy, worker, worker_id = start_pair(live_consul, start_worker, start_proxy, tmp_path)
    live_consul.restart_empty()  # rebuilt without its data dir: nobody is registered
    wait_until(lambda: worker_id in live_consul.services, timeout=10)
    wait_until(lambda: registered(proxy) == [worker_id], timeout=10)
    assert "no longer lists" in worker.output()
    assert post(proxy.url).status_code == 200


def test_a_killed_worker_goes_critical_and_gets_no_more_traffic(
    live_consul, start_worker, start_proxy, tmp_path
) -> None:
    proxy, worker, worker_id = start_pair(live_consul, start_worker, start_proxy, tmp_path)
    spare = start_worker(
        "--model",
        "sleepy",
        "--model-repository",
        str(tmp_path / "models"),
        "--registry",
        "consul",
        "--consul-url",
        live_consul.url,
    )
    spare_id = spare.url.removeprefix("http://")
    wait_until(lambda: sorted(registered(proxy)) == sorted([worker_id, spare_id]), timeout=10)
    worker.stop(signal.SIGKILL)
    wait_until(lambda: live_consul.checks_of(worker_id)[0]["Status"] == "critical", timeout=10)
    wait_until(lambda: registered(proxy) == [spare_id], timeout=10)
    assert {post(proxy.url).headers["X-Worker-ID"] for _ in range(6)} == {spare_id}


def test_worker_and_proxy_meet_through_consul(live_consul, start_worker, start_proxy, tmp_path: Path) -> None:
    consul = live_consul
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


def test_keys_and_the_pool_secret_kept_in_consul(make_consul, start_worker, start_proxy, tmp_path: Path) -> None:
    from visionpool.client import Client
    from visionpool.proxy.keys import add_key, open_store, revoke_key

    consul = make_consul(run_checks=True, token="root")
    consul.kv_put("visionpool/pool-secret", b"a pool secret of at least thirty-two bytes\n")
    store = open_store("consul:visionpool/api-keys", consul.url, "root")
    key = add_key(store, "alice", rate=1000, burst=1000, models=[])
    flags = ["--registry", "consul", "--consul-url", consul.url, "--consul-token", "root",
             "--pool-secret-file", "consul:visionpool/pool-secret"]  # fmt: skip
    proxy = start_proxy(*flags, "--api-keys", "consul:visionpool/api-keys")
    worker = start_worker("--model", "sleepy", "--model-repository", str(write_sleepy_model(tmp_path / "models", 0.01)),
                          *flags)  # fmt: skip
    auth = {"Authorization": f"Bearer {key}"}
    wait_until(lambda: len(requests.get(proxy.url + "/workers", headers=auth, timeout=5).json()["workers"]) == 1, 10)
    assert post(proxy.url).status_code == 401  # no key
    assert post(worker.url).status_code == 401  # no ticket: the worker read the secret from Consul
    for mode in ("proxy", "p2p"):  # p2p: the proxy's ticket, signed with the secret from Consul, opens the worker
        with Client(proxy.url, mode=mode, api_key=key) as client:
            assert client.predict(IMAGE).predictions

    add_key(store, "bob", rate=1000, burst=1000, models=[])  # any writer: the proxy hears of it from Consul
    revoke_key(store, "alice")
    revoked = time.monotonic()
    headers = {"Content-Type": "image/png", **auth}
    wait_until(lambda: requests.post(proxy.url + "/predict", data=IMAGE, headers=headers, timeout=10).status_code
               == 401, 5)  # fmt: skip
    assert time.monotonic() - revoked < 1.0
