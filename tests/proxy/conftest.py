"""A pool on loopback: a proxy with its embedded registry, and workers on a fast sleeping model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from helpers import ServerProcess, wait_until, write_sleepy_model

TOKEN = "test-registry-token"
TTL = "1.5"  # seconds: workers renew every 0.5 s, so a restarted proxy relearns them fast


@dataclass
class Pool:
    """A running proxy and the workers registered with it."""

    proxy: ServerProcess
    start_worker: Callable[..., ServerProcess]
    repository: Path
    workers: list[ServerProcess] = field(default_factory=list)

    def add_worker(self, *args: str, model: str = "sleepy", repository: Path | None = None) -> ServerProcess:
        worker = self.start_worker(
            "--model",
            model,
            "--model-repository",
            str(repository or self.repository),
            "--registry",
            "local",
            "--registry-url",
            self.proxy.url,
            "--registry-token",
            TOKEN,
            "--registry-ttl",
            TTL,
            *args,
        )
        self.workers.append(worker)
        return worker

    def registered(self) -> set[str]:
        return {w["id"] for w in requests.get(self.proxy.url + "/workers", timeout=5).json()["workers"]}

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        wait_until(lambda: len(self.registered()) == count, timeout)


@pytest.fixture
def make_pool(start_proxy, start_worker, tmp_path: Path) -> Callable[..., Pool]:
    """Start a proxy and ``workers`` workers; returns once every worker is in the rotation."""

    def make(workers: int = 3, *proxy_args: str, seconds: float = 0.02) -> Pool:
        repository = write_sleepy_model(tmp_path / "models", seconds=seconds, max_batch_size=8, max_queue_size=256)
        proxy = start_proxy("--registry-token", TOKEN, "--registry-ttl", TTL, *proxy_args)
        pool = Pool(proxy, start_worker, repository)
        for _ in range(workers):
            pool.add_worker()
        pool.wait_for(workers)
        return pool

    return make
