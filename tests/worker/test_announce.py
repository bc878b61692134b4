"""Registration around shutdown: a worker that was registered is always deregistered."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

from visionpool.discovery import Instance, Registry
from visionpool.worker.announce import Announcer


class SlowRegistry(Registry):
    """A registry double whose register() only returns once the worker has begun to stop."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.stopping: threading.Event | None = None

    def register(self, instance: Instance) -> None:
        assert self.stopping is not None
        self.stopping.wait(10)
        self.calls.append("register")

    def deregister(self, instance: Instance) -> None:
        self.calls.append("deregister")

    async def watch(self) -> AsyncIterator[list[Instance]]:
        yield []


def test_a_stop_during_registration_still_deregisters() -> None:
    registry, ready = SlowRegistry(), threading.Event()
    ready.set()
    announcer = Announcer(registry, Instance("w:1", "http://w:1", {"m": "1"}), ready)
    registry.stopping = announcer.stopping
    announcer.start()
    announcer.stop()  # arrives while register() is in flight
    assert registry.calls == ["register", "deregister"]
