"""The pool as the page shows it (GET /pool): each worker's state and last-minute numbers, and the models.

Usage:
    view = PoolView(pool, session)
    document = await view.read()       # {"role": "proxy", "workers": [...], "models": [...]}

Nothing here runs per prediction. When someone looks, the proxy asks every registered worker for its
GET /stats (what its metrics already hold), at most once per REFRESH_SECONDS however many look, and
adds what only the proxy knows: which workers it has ejected, and which left the registry (kept on
show for LEFT_SECONDS, so an operator sees a worker go).

A worker's state is its own (loading, ready, draining, failed) unless the proxy knows better:
ejected (the proxy stopped sending to it for a while), unreachable (registered, but its /stats did
not answer), left (no longer registered).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from visionpool.client import wire
from visionpool.discovery import Instance
from visionpool.serving.page import pool_document, worker_row

from .pool import Pool

REFRESH_SECONDS = 1.0
STATS_TIMEOUT = aiohttp.ClientTimeout(total=1.5)
LEFT_SECONDS = 30.0


class PoolView:
    """Gathers the page's view of the pool on demand; one gathering at a time, reused for REFRESH_SECONDS."""

    def __init__(self, pool: Pool, session: aiohttp.ClientSession) -> None:
        self.pool, self.session = pool, session
        self._known: dict[str, Instance] = {}
        self._left: dict[str, tuple[Instance, float]] = {}  # id -> (instance, monotonic time it left)
        self._latest: tuple[float, dict[str, Any]] | None = None
        self._gathering: asyncio.Task[dict[str, Any]] | None = None

    async def read(self) -> dict[str, Any]:
        """The view, gathered now or at most REFRESH_SECONDS ago."""
        if self._latest is not None and time.monotonic() - self._latest[0] < REFRESH_SECONDS:
            return self._latest[1]
        if self._gathering is None:
            self._gathering = asyncio.create_task(self._gather(), name="gather-pool-view")
            self._gathering.add_done_callback(self._gathered)
        return await asyncio.shield(self._gathering)  # a reader that goes away does not cancel the others'

    def _gathered(self, task: asyncio.Task[dict[str, Any]]) -> None:
        self._gathering = None
        if not task.cancelled() and task.exception() is None:
            self._latest = (time.monotonic(), task.result())

    async def _gather(self) -> dict[str, Any]:
        now = time.monotonic()
        current = dict(self.pool.instances)
        for gone in self._known.keys() - current.keys():
            self._left[gone] = (self._known[gone], now)
        self._left = {i: left for i, left in self._left.items() if i not in current and now - left[1] < LEFT_SECONDS}
        self._known = current
        shown = [(instance, None) for instance in current.values()] + list(self._left.values())
        answers = await asyncio.gather(*(self._stats(instance) for instance, _ in shown))
        rows = [self._row(instance, left, *answer) for (instance, left), answer in zip(shown, answers, strict=True)]
        return pool_document("proxy", sorted(rows, key=lambda row: (row["left_s_ago"] is not None, row["id"])))

    async def _stats(self, instance: Instance) -> tuple[dict[str, Any] | None, str | None]:
        """The worker's /stats, or None and why not."""
        try:
            async with self.session.get(instance.url + wire.STATS, timeout=STATS_TIMEOUT) as response:
                if response.status != 200:
                    return None, f"its {wire.STATS} answered {response.status}"
                stats = await response.json(content_type=None)
        except TimeoutError:
            return None, f"its {wire.STATS} did not answer within {STATS_TIMEOUT.total:g} s"
        except (aiohttp.ClientError, ValueError) as error:
            return None, f"its {wire.STATS} could not be read: {error or type(error).__name__}"
        return (stats, None) if isinstance(stats, dict) else (None, f"its {wire.STATS} is not a JSON object")

    def _row(
        self, instance: Instance, left: float | None, stats: dict[str, Any] | None, error: str | None
    ) -> dict[str, Any]:
        now = time.monotonic()
        ejected_until = self.pool.ejected.get(instance.id, 0.0)
        if left is not None:
            state = "draining" if stats and stats.get("state") == "draining" else "left"
        elif ejected_until > now:
            state = "ejected"
        elif stats is None:
            state = "unreachable"
        else:
            state = str(stats.get("state", "unknown"))
        return worker_row(
            instance.as_json(),
            state,
            stats,
            error=error,
            ejected_for_s=round(ejected_until - now, 1) if state == "ejected" else None,
            left_s_ago=round(now - left, 1) if left is not None else None,
        )
