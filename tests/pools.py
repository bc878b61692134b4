"""A pool on loopback for the client and the tools' tests: a proxy and workers on the real SSD detector or the
sleepy model (the conftest.py of tests/client and tests/tools import the fixture)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from helpers import ServerProcess, wait_until, write_sleepy_model

TOKEN = "client-tests-token"


def joining(proxy: ServerProcess, token: str = TOKEN) -> tuple[str, ...]:
    """A worker's flags to register with ``proxy``'s local registry."""
    return ("--registry", "local", "--registry-url", proxy.url, "--registry-token", token)


def wait_for_workers(proxy: ServerProcess, count: int, headers: dict[str, str] | None = None) -> None:
    """Until ``proxy`` has ``count`` workers in its rotation."""
    url = proxy.url + "/workers"
    wait_until(lambda: len(requests.get(url, headers=headers, timeout=5).json()["workers"]) == count)


class Pool:
    """A proxy and its workers."""

    def __init__(self, proxy: ServerProcess, workers: list[ServerProcess]) -> None:
        self.proxy, self.workers = proxy, workers

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture
def make_pool(request: pytest.FixtureRequest, start_proxy, start_worker, tmp_path: Path) -> Callable[..., Pool]:
    """Start a proxy and ``workers`` workers serving ``model`` ("ssd-mobilenet-v2", which needs the shared test
    models, or "sleepy", which needs nothing), each started with ``worker_args``."""

    def make(workers: int = 2, model: str = "ssd-mobilenet-v2", *worker_args: str, **sleepy: object) -> Pool:
        if model == "sleepy":
            repository = write_sleepy_model(tmp_path / "models", **sleepy)  # type: ignore[arg-type]
        else:
            repository = request.getfixturevalue("model_repository")
        proxy = start_proxy("--registry-token", TOKEN)
        started = [
            start_worker("--model", model, "--model-repository", str(repository), *joining(proxy), *worker_args)
            for _ in range(workers)
        ]
        wait_for_workers(proxy, workers)
        return Pool(proxy, started)

    return make


@dataclasses.dataclass
class SecuredPool:
    """A proxy with API keys and a pool secret, one worker holding the secret, and a key for the pool."""

    proxy: ServerProcess
    worker: ServerProcess
    key: str
    secret: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def secured_pool(start_proxy, start_worker, root: Path, *worker_args: str, rate: float = 1000) -> SecuredPool:  # noqa: ANN001
    """Start it: the key may send ``rate`` requests a second; the worker serves the sleepy model."""
    from visionpool.proxy.keys import add_key, open_store

    keys, secret = root / "keys.json", root / "pool.secret"
    secret.write_bytes(b"a pool secret of at least thirty-two bytes\n")
    key = add_key(open_store(keys), "alice", rate=rate, burst=rate, models=[])
    proxy = start_proxy("--registry-token", TOKEN, "--api-keys", str(keys), "--pool-secret-file", str(secret))
    worker = start_worker(
        "--model", "sleepy", "--model-repository", str(write_sleepy_model(root / "models", 0.01, 8, 64)),
        "--pool-secret-file", str(secret), *joining(proxy), *worker_args,
    )  # fmt: skip
    pool = SecuredPool(proxy, worker, key, secret)
    wait_for_workers(proxy, 1, pool.auth)
    return pool
