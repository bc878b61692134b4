"""Dynamic batching: requests for one model are gathered into one engine call.

Usage:
    batcher = Batcher("coco-ssd", engines, spec)
    with batcher.arriving():                       # announce a request that is decoding
        tensor = ...
        job = batcher.submit(tensor, deadline)     # Overloaded when the queue is full
    outputs = job.wait()                           # DeadlineExceeded past the deadline

Like Triton's dynamic batcher, a batch closes at ``max_batch_size`` or after
``max_queue_delay_ms``, but the batcher only waits when a request is on its way
(announced and still decoding): with nothing coming, a lone request runs at once
and batching costs it no latency.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from .engines import Engine
from .errors import DeadlineExceeded, EngineFailed, Overloaded
from .repository import BatchingSpec

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, ABANDONED = "queued", "running", "done", "abandoned"


class Job:
    """One image waiting for, or done by, the engine."""

    def __init__(self, tensor: np.ndarray, deadline: float) -> None:
        self.tensor, self.deadline = tensor, deadline
        self.enqueued = time.monotonic()
        self.queue_s = self.inference_s = 0.0
        self.batch_size = 0
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: Exception | None = None
        self._state = QUEUED
        self._lock = threading.Lock()
        self._done = threading.Event()

    def start(self, now: float) -> bool:
        """Claim the job for a batch; False when its caller gave up or its deadline passed."""
        with self._lock:
            if self._state != QUEUED:
                return False
            if now > self.deadline:
                self._state = ABANDONED
                self.error = DeadlineExceeded("The request waited past its deadline in the queue and was not run.")
                self._done.set()
                return False
            self._state = RUNNING
        self.queue_s = now - self.enqueued
        return True

    def finish(self, outputs: dict[str, np.ndarray] | None, error: Exception | None = None) -> None:
        self.outputs, self.error = outputs, error
        self._state = DONE
        self._done.set()

    def wait(self) -> dict[str, np.ndarray]:
        """The job's outputs; DeadlineExceeded when it is still queued at its deadline."""
        if not self._done.wait(max(self.deadline - time.monotonic(), 0.0)):
            with self._lock:
                if self._state == QUEUED:
                    self._state = ABANDONED
                    raise DeadlineExceeded("The request waited past its deadline in the queue and was not run.")
            self._done.wait()  # already in a batch: its answer is milliseconds away
        if self.error is not None:
            raise self.error
        assert self.outputs is not None
        return self.outputs


class Batcher:
    """A bounded queue and one thread per engine instance, gathering jobs into batches."""

    def __init__(
        self, name: str, engines: list[Engine], spec: BatchingSpec, on_batch: Callable[[int], None] = lambda size: None
    ) -> None:
        self.name, self.engines = name, engines
        self.max_batch = max(1, min(spec.max_batch_size, *(e.max_batch_size for e in engines)))
        self.max_delay = spec.max_queue_delay_ms / 1000.0
        self.queue: queue.Queue[Job | None] = queue.Queue(spec.max_queue_size)
        self._arriving = 0
        self._arriving_lock = threading.Lock()
        self.on_batch = on_batch  # told each batch's size (the batch-size histogram)
        self.threads = [
            threading.Thread(target=self._loop, args=(engine,), name=f"batcher-{name}-{i}", daemon=True)
            for i, engine in enumerate(engines)
        ]
        for thread in self.threads:
            thread.start()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way, so a forming batch waits for it."""
        with self._arriving_lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._arriving_lock:
                self._arriving -= 1

    def submit(self, tensor: np.ndarray, deadline: float) -> Job:
        """Queue one preprocessed image; Overloaded when the queue is full."""
        job = Job(tensor, deadline)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(self.name) from None
        return job

    def close(self) -> None:
        """Stop the threads once the queue ahead of them is done."""
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        for engine in self.engines:
            engine.close()

    def _loop(self, engine: Engine) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            if batch:
                self._run(engine, batch)

    def _gather(self) -> list[Job] | None:
        first = self.queue.get()
        if first is None:
            return None
        now = time.monotonic()
        batch = [first] if first.start(now) else []
        close_at = now + self.max_delay
        while len(batch) < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                wait = close_at - time.monotonic()
                if wait <= 0 or self._arriving == 0:
                    break
                try:
                    job = self.queue.get(timeout=wait)
                except queue.Empty:
                    break
            if job is None:
                self.queue.put(None)  # keep the stop signal for this loop's next turn
                break
            if job.start(time.monotonic()):
                batch.append(job)
        return batch

    def _run(self, engine: Engine, batch: list[Job]) -> None:
        started = time.monotonic()
        try:
            outputs = engine.run(np.stack([job.tensor for job in batch]))
        except Exception:
            logger.exception("model %s failed on a batch of %d", self.name, len(batch))
            error = EngineFailed(f"Model {self.name!r} failed to run; the worker log has the details.")
            for job in batch:
                job.finish(None, error)
            return
        elapsed = time.monotonic() - started
        self.on_batch(len(batch))
        for job, output in zip(batch, outputs, strict=True):
            job.inference_s, job.batch_size = elapsed, len(batch)
            job.finish(output)
