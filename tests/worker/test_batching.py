"""Dynamic batching: concurrent requests share engine calls, and each caller gets its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from flask import Flask
from helpers import encode, wait_until

from visionpool.worker.models import get_models

TOP_LABEL = {"chelsea": "cat", "coffee": "cup", "camera": "person"}


def test_a_burst_of_mixed_images_is_batched_and_answered_correctly(onnx_app: Flask, jpegs: dict[str, bytes]) -> None:
    names = list(TOP_LABEL) * 16

    def ask(name: str) -> tuple[str, dict]:
        response = onnx_app.test_client().post("/predict", data=jpegs[name], content_type="image/jpeg")
        assert response.status_code == 200
        return name, response.get_json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, names))
    for name, body in answers:
        assert body["predictions"][0]["label"] == TOP_LABEL[name], name
    cap = get_models(onnx_app).get("ssd-mobilenet-v2").batcher.max_batch  # ONNX Runtime on a CPU: 1; OpenVINO: 2
    assert max(body["batch_size"] for _, body in answers) == cap
    registry = onnx_app.extensions["visionpool.metrics"].registry
    labels = {"model": "ssd-mobilenet-v2"}
    images = registry.get_sample_value("visionpool_worker_batch_size_sum", labels)
    batches = registry.get_sample_value("visionpool_worker_batch_size_count", labels)
    assert images / batches > 1 if cap > 1 else images == batches  # more than one image per call, where allowed


def test_a_lone_request_does_not_wait_for_a_batch(sleepy_app: Callable[..., Flask]) -> None:
    app = sleepy_app(seconds=0.0, max_batch_size=8)
    get_models(app).models["sleepy"].batcher.max_delay = 5.0  # only arrivals may make it wait
    started = time.monotonic()
    response = app.test_client().post(
        "/predict", data=encode(np.zeros((8, 8, 3), np.uint8), "PNG"), content_type="image/png"
    )
    assert response.status_code == 200 and time.monotonic() - started < 2.0


def test_full_queue_answers_503_with_retry_after(sleepy_app: Callable[..., Flask]) -> None:
    app = sleepy_app(seconds=0.5, max_batch_size=1, max_queue_size=1)
    batcher = get_models(app).models["sleepy"].batcher
    engine = batcher.engines[0].model
    image = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    post = lambda: app.test_client().post("/predict", data=image, content_type="image/png")  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(post)
        wait_until(lambda: len(engine.batches) == 2)  # warm-up + this one: the engine is busy
        queued = pool.submit(post)
        wait_until(lambda: batcher.depth() == 1)
        refused = post()
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.get_json()["error"]["code"] == "overloaded"
        assert running.result().status_code == 200 and queued.result().status_code == 200


def test_request_past_its_deadline_is_504_and_never_run(sleepy_app: Callable[..., Flask]) -> None:
    app = sleepy_app(seconds=0.6, max_batch_size=1, request_timeout=0.2)
    engine = get_models(app).models["sleepy"].batcher.engines[0].model
    image = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    results: dict[str, int] = {}

    def post(key: str) -> None:
        results[key] = app.test_client().post("/predict", data=image, content_type="image/png").status_code

    first = threading.Thread(target=post, args=("first",))
    first.start()
    wait_until(lambda: len(engine.batches) == 2)
    post("second")  # queued behind a 0.6 s batch with a 0.2 s deadline
    first.join()
    post("third")  # the queue is first-in first-out: once this one is done, the second had its turn
    assert results == {"first": 200, "second": 504, "third": 200}
    assert len(engine.batches) == 3  # warm-up, first, third: the late one never reached the engine


def test_a_submitted_request_no_longer_holds_its_batch(sleepy_app: Callable[..., Flask]) -> None:
    """The batcher may take the job before its request leaves arriving(): it must not wait for it."""
    app = sleepy_app(seconds=0.0, max_batch_size=8)
    batcher = get_models(app).get("sleepy").batcher
    batcher.max_delay = 5.0
    tensor = np.zeros((3, 8, 8), np.float32)
    with batcher.arriving() as arrival:
        submitted = time.monotonic()
        job = batcher.submit(tensor, submitted + 30, arrival)
        job.wait()  # still inside arriving(): a batcher counting it as on its way would hold it 5 s
        answered = time.monotonic()
    assert job.batch_size == 1 and answered - submitted < 1.0


def test_a_batch_waits_for_a_request_still_decoding(sleepy_app: Callable[..., Flask]) -> None:
    app = sleepy_app(seconds=0.0, max_batch_size=8)
    batcher = get_models(app).get("sleepy").batcher
    batcher.max_delay = 5.0
    tensor = np.zeros((3, 8, 8), np.float32)
    with batcher.arriving() as first_arrival, batcher.arriving() as second_arrival:
        first = batcher.submit(tensor, time.monotonic() + 30, first_arrival)
        time.sleep(0.05)  # the second one is still being decoded
        second = batcher.submit(tensor, time.monotonic() + 30, second_arrival)
    first.wait(), second.wait()
    assert first.batch_size == second.batch_size == 2


def test_the_engine_may_change_its_batch_in_place_whatever_its_size() -> None:
    """A lone image goes to the engine without a copy; one that arrived read-only (v2's binary tensors) is copied,
    so a Python model that scales its batch in place works for one image as for several."""
    from visionpool.worker.batching import Batcher
    from visionpool.worker.engines import Engine
    from visionpool.worker.repository import BatchingSpec

    class InPlace(Engine):
        max_batch_size = 8

        def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
            batch /= 2.0
            return [{"out": image.copy()} for image in batch]

    batcher = Batcher("in-place", [InPlace()], BatchingSpec(max_batch_size=8, max_queue_delay_ms=0))
    try:
        frozen = np.frombuffer(np.full(4, 8.0, np.float32).tobytes(), np.float32)  # as v2 reads a binary tensor
        assert not frozen.flags.writeable
        job = batcher.submit(frozen, time.monotonic() + 10)
        assert job.wait()["out"].tolist() == [4.0] * 4 and frozen.tolist() == [8.0] * 4
    finally:
        batcher.close()


def test_images_that_come_together_in_the_event_loop_go_to_the_engine_as_one_batch(
    sleepy_app: Callable[..., Flask],
) -> None:
    """Small JPEGs answered in the event loop's thread wake the batcher once the loop has taken in every request
    that came with them, not once each: one engine call for all six, and each its own answer."""
    pipeline = get_models(sleepy_app(seconds=0.0, max_batch_size=8)).get("sleepy")
    engine = pipeline.batcher.engines[0].model
    ran = len(engine.batches)  # the warm-up's
    images = [encode(np.full((16, 16, 3), value, np.uint8), "JPEG") for value in range(0, 240, 40)]

    async def together() -> list:
        deadline = time.monotonic() + 30
        return await asyncio.gather(*(pipeline.predict_here(image, deadline=deadline) for image in images))

    answers = asyncio.run(together())
    assert engine.batches[ran:] == [6]
    assert [answer.batch_size for answer in answers] == [6] * 6 and all(a.predictions for a in answers)
    closed = asyncio.new_event_loop()
    pipeline._wake_after(closed)  # a loop that closed with its wake-up still to run
    closed.close()
    assert asyncio.run(together())[0].batch_size == 6  # does not leave the next loop's jobs asleep


def test_jobs_queued_without_waking_wait_for_wake_or_a_full_batch(sleepy_app: Callable[..., Flask]) -> None:
    batcher = get_models(sleepy_app(seconds=0.0, max_batch_size=3)).get("sleepy").batcher
    engine = batcher.engines[0].model
    ran = len(engine.batches)  # the warm-up's
    wait_until(lambda: len(batcher._changed._waiters) == 1)  # its thread asleep, waiting for jobs
    tensor = np.zeros((3, 8, 8), np.float32)
    jobs = [batcher.submit(tensor, time.monotonic() + 30, wake=False) for _ in range(2)]
    time.sleep(0.2)
    assert batcher.depth() == 2 and len(engine.batches) == ran  # asleep until woken
    batcher.wake()
    assert all(job.wait() is not None for job in jobs) and engine.batches[ran:] == [2]
    jobs = [batcher.submit(tensor, time.monotonic() + 30, wake=False) for _ in range(3)]
    assert all(job.wait() is not None for job in jobs)  # a full batch woke it: waiting cannot make it bigger
    assert engine.batches[ran:] == [2, 3]


def test_a_full_queue_wakes_the_batcher_however_big_its_batches(sleepy_app: Callable[..., Flask]) -> None:
    """A queue shorter than a batch: queued without waking, it is drained once full, not left to refuse the next."""
    batcher = get_models(sleepy_app(seconds=0.0, max_batch_size=8, max_queue_size=2)).get("sleepy").batcher
    wait_until(lambda: len(batcher._changed._waiters) == 1)  # its thread asleep, waiting for jobs
    tensor = np.zeros((3, 8, 8), np.float32)
    jobs = [batcher.submit(tensor, time.monotonic() + 5, wake=False) for _ in range(2)]
    assert all(job.wait() is not None for job in jobs)  # not DeadlineExceeded, unrun
    wait_until(lambda: batcher.depth() == 0)
    assert batcher.submit(tensor, time.monotonic() + 30, wake=False) is not None  # room again
    batcher.wake()
