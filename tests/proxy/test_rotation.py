"""The proxy's rotation on its own: round-robin per model, ejection and return, 404 versus 503."""

from __future__ import annotations

import pytest

from visionpool.client.wire import Code
from visionpool.discovery import Instance
from visionpool.proxy import pool as pool_module
from visionpool.proxy.errors import no_worker
from visionpool.proxy.pool import Pool

A = Instance("a:1", "http://a:1", {"cat": "1"})
B = Instance("b:1", "http://b:1", {"cat": "1", "dog": "2"})
C = Instance("c:1", "http://c:1", {"dog": "2"})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pool's monotonic clock, set by hand: clock[0] is now."""
    now = [1000.0]
    monkeypatch.setattr(pool_module.time, "monotonic", lambda: now[0])
    return now


def test_round_robin_per_model() -> None:
    pool = Pool()
    pool.update([C, B, A])
    assert [pool.pick("cat").id for _ in range(4)] == ["a:1", "b:1", "a:1", "b:1"]  # type: ignore[union-attr]
    assert [pool.pick("dog").id for _ in range(2)] == ["b:1", "c:1"]  # type: ignore[union-attr]
    assert pool.pick("bird") is None and pool.served() == {"cat", "dog"}
    assert pool.pick("cat", exclude={"a:1", "b:1"}) is None


def test_an_ejected_worker_returns_after_eject_seconds(clock: list[float]) -> None:
    pool = Pool(eject_seconds=10)
    pool.update([A, B])
    pool.eject("a:1", "refused")
    assert [i.id for i in pool.healthy("cat")] == ["b:1"]
    assert pool.served() == {"cat", "dog"}  # still known: a 503 to retry, not a 404
    clock[0] += 10
    assert [i.id for i in pool.healthy("cat")] == ["a:1", "b:1"]


def test_a_worker_that_registers_again_is_taken_back_at_once(clock: list[float]) -> None:
    pool = Pool(eject_seconds=10)
    pool.update([A])
    pool.eject("a:1", "refused")
    pool.update([])
    pool.update([A])  # it left the registry and came back (restarted)
    assert pool.pick("cat") == A


def test_no_worker_is_404_for_a_model_nobody_serves_and_503_otherwise() -> None:
    unknown = no_worker("bird", {"cat", "dog"})
    assert (unknown.status, unknown.code) == (404, Code.MODEL_NOT_FOUND) and "cat, dog" in unknown.message
    down = no_worker("cat", {"cat"})
    assert (down.status, down.code, down.headers) == (503, Code.NO_WORKER, {"Retry-After": "1"})
    empty = no_worker(None, set())
    assert empty.status == 503 and "registered" in empty.message


def test_three_busy_answers_in_a_row_eject_a_worker_and_any_other_answer_starts_the_count_over() -> None:
    pool = Pool(eject_seconds=10)
    pool.update([A, B])
    assert not pool.failed("a:1", "503", busy=True) and not pool.failed("a:1", "503", busy=True)
    pool.answered("a:1")  # a 200 (or a 4xx) in between: not busy in a row
    assert not pool.failed("a:1", "503", busy=True) and not pool.failed("a:1", "503", busy=True)
    assert [i.id for i in pool.healthy("cat")] == ["a:1", "b:1"]
    assert pool.failed("a:1", "503", busy=True)  # the third in a row
    assert [i.id for i in pool.healthy("cat")] == ["b:1"]
    assert pool.failed("b:1", "refused")  # a refused connection ejects at once
