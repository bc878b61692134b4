"""The healthy workers as the proxy sees them: round-robin per model, failing ones ejected for a while.

A worker that refuses the connection, breaks it or does not answer in time is ejected at once;
one that answers 503 (draining, still loading, out of connections) after BUSY_IN_A_ROW such answers in a
row. A 503 for a full queue does not count (the forwarder tries another worker, but the worker is at work,
and ejecting it would take capacity away when the pool is short of it). Any other answer, 4xx included, is
the worker doing its job and clears its count.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Iterable

from visionpool.discovery import Instance

logger = logging.getLogger(__name__)
BUSY_IN_A_ROW = 3


class Pool:
    """The registry's healthy instances, minus those ejected after a failure."""

    def __init__(self, eject_seconds: float = 10.0) -> None:
        self.eject_seconds = eject_seconds
        self.instances: dict[str, Instance] = {}
        self.ejected: dict[str, float] = {}  # instance id -> monotonic time it may come back
        self.busy: dict[str, int] = {}  # instance id -> 503 answers in a row
        self._turns: defaultdict[str | None, itertools.count[int]] = defaultdict(itertools.count)
        self._served: frozenset[str] = frozenset()  # made when the instances change, not per request
        self._rotation: dict[str | None, list[Instance]] = {}  # model -> its healthy instances, sorted

    def update(self, instances: Iterable[Instance]) -> None:
        """Replace the known instances with the registry's current healthy set."""
        current = {i.id: i for i in instances}
        for gone in self.instances.keys() - current.keys():
            logger.info("worker %s left the rotation", gone)
        for new in current.keys() - self.instances.keys():
            logger.info("worker %s joined the rotation at %s", new, current[new].url)
            self.ejected.pop(new, None)
        self.instances = current
        self._served = frozenset(name for instance in current.values() for name in instance.models)
        self._rotation.clear()

    def failed(self, instance_id: str, reason: str, *, busy: bool = False) -> bool:
        """Count a failure: eject at once, or for a 503 after BUSY_IN_A_ROW in a row; True when ejected."""
        if busy:
            self.busy[instance_id] = self.busy.get(instance_id, 0) + 1
            if self.busy[instance_id] < BUSY_IN_A_ROW:
                return False
        self.busy.pop(instance_id, None)
        self.eject(instance_id, reason)
        return True

    def answered(self, instance_id: str) -> None:
        """The worker answered (anything but 503): its count of busy answers starts over."""
        if self.busy:
            self.busy.pop(instance_id, None)

    def eject(self, instance_id: str, reason: str) -> None:
        """Take a worker out of rotation at once after a failure; it returns after eject_seconds."""
        if instance_id not in self.ejected:
            logger.warning("worker %s ejected for %.0f s: %s", instance_id, self.eject_seconds, reason)
        self.ejected[instance_id] = time.monotonic() + self.eject_seconds
        self._rotation.clear()

    def served(self) -> frozenset[str]:
        """Every model some registered worker serves (ejected ones included)."""
        return self._served

    def healthy(self, model: str | None = None) -> list[Instance]:
        """Instances serving ``model`` (any, for None) and not ejected, in a stable order."""
        if self.ejected:
            now = time.monotonic()
            back = [instance_id for instance_id, until in self.ejected.items() if until <= now]
            for instance_id in back:
                del self.ejected[instance_id]
            if back:
                self._rotation.clear()
        rotation = self._rotation.get(model)
        if rotation is None:
            rotation = self._rotation[model] = sorted(
                (
                    i
                    for i in self.instances.values()
                    if i.id not in self.ejected and (model is None or model in i.models)
                ),
                key=lambda i: i.id,
            )
        return rotation

    def pick(self, model: str | None, exclude: set[str] = frozenset()) -> Instance | None:  # type: ignore[assignment]
        """The next healthy instance for ``model`` in round-robin order, skipping ``exclude``."""
        healthy = self.healthy(model)
        candidates = [i for i in healthy if i.id not in exclude] if exclude else healthy
        if not candidates:
            return None
        return candidates[next(self._turns[model]) % len(candidates)]


def _by_id(instance: Instance) -> str:
    return instance.id
