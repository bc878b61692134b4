"""Dynamic batching: requests for one model are gathered into one engine call.

Usage:
    batcher = Batcher("coco-ssd", engines, spec)
    with batcher.arriving() as arrival:            # announce a request that is decoding
        tensor = ...
        job = batcher.submit(tensor, deadline, arrival)   # no longer arriving; Overloaded when full
    outputs = job.wait()                           # DeadlineExceeded past the deadline

Like Triton's dynamic batcher, a batch closes at ``max_batch_size`` or after
``max_queue_delay_ms``, but the batcher only waits when a request is on its way
(announced and still decoding): with nothing coming, a lone request runs at once
and batching costs it no latency. On an engine that runs on a CPU (Engine.batch_waits)
a batch never waits: there the wait idles a run while the other cores decode, and
under load batches form from what is queued without it (docs/models.md).
"""

from __future__ import annotations

import collections
import contextlib
import logging
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

    def __init__(self, tensor: np.ndarray, deadline: float, on_done: Callable[[Job], None] | None = None) -> None:
        self.tensor, self.deadline = tensor, deadline
        self.on_done = on_done  # told when the job ends, however it ends (front processes: worker/fronts.py)
        self.enqueued = time.monotonic()
        self.queue_s = self.inference_s = 0.0
        self.batch_size = 0
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: Exception | None = None
        self._state = QUEUED
        self._lock = threading.Lock()
        self._done = threading.Lock()  # held until the job ends: cheaper to wait on than an Event (one C call)
        self._done.acquire()

    def start(self, now: float) -> bool:
        """Claim the job for a batch; False when its caller gave up or its deadline passed."""
        with self._lock:
            if self._state != QUEUED:
                return False
            if now <= self.deadline:
                self._state = RUNNING
                self.queue_s = now - self.enqueued
                return True
        self.abandon()
        return False

    def abandon(self) -> bool:
        """Give up on a job still queued (its deadline passed): it ends with DeadlineExceeded and is never run.
        False when it is already in a batch or done."""
        with self._lock:
            if self._state != QUEUED:
                return False
            self._state = ABANDONED
            self.error = DeadlineExceeded("The request waited past its deadline in the queue and was not run.")
        self._done.release()
        if self.on_done is not None:
            self.on_done(self)
        return True

    def finish(self, outputs: dict[str, np.ndarray] | None, error: Exception | None = None) -> None:
        self.outputs, self.error = outputs, error
        self._state = DONE
        self._done.release()
        if self.on_done is not None:
            self.on_done(self)

    def wait(self) -> dict[str, np.ndarray]:
        """The job's outputs; DeadlineExceeded when it is still queued at its deadline."""
        if not self._done.acquire(timeout=max(self.deadline - time.monotonic(), 0.0)):
            self.abandon()
            self._done.acquire()  # abandoned now, or already in a batch: its answer is milliseconds away
        self._done.release()  # ended for good: a second wait returns at once
        if self.error is not None:
            raise self.error
        assert self.outputs is not None
        return self.outputs


class Arrival:
    """One request on its way to the queue; it stops counting as arriving once submitted."""

    def __init__(self) -> None:
        self.ended = False


class Batcher:
    """A bounded queue and one thread per engine run in flight, gathering jobs into batches.

    Every change the gathering threads wait on (a job queued, an arrival ended, a stop)
    happens under one condition and wakes them, so a batch never waits for a request that
    is no longer on its way.
    """

    def __init__(
        self, name: str, engines: list[Engine], spec: BatchingSpec, on_batch: Callable[[int], None] = lambda size: None
    ) -> None:
        self.name, self.engines = name, engines
        self.configured_batch = spec.max_batch_size  # what the config asks for
        capped = min(engines, key=lambda e: e.max_batch_size)
        self.max_batch = max(1, min(spec.max_batch_size, capped.max_batch_size))  # what the engines allow
        self.batch_limit = capped.batch_limit if self.max_batch < spec.max_batch_size else ""
        waits = all(engine.batch_waits for engine in engines)  # whether a batch waits for images on their way
        self.max_delay = spec.max_queue_delay_ms / 1000.0 if waits else 0.0
        self.max_queue = spec.max_queue_size
        self.on_batch = on_batch  # told each batch's size (the batch-size histogram)
        self._jobs: collections.deque[Job] = collections.deque()
        self._arriving = 0  # requests being decoded, announced by arriving()
        self._closing = False
        self._changed = threading.Condition()
        self.threads = [  # one per run an engine can have in flight (OpenVINO: one per stream)
            threading.Thread(target=self._loop, args=(engine,), name=f"batcher-{name}-{i}-{lane}", daemon=True)
            for i, engine in enumerate(engines)
            for lane in range(engine.parallel)
        ]
        for thread in self.threads:
            thread.start()

    @property
    def wakes_on_submit(self) -> bool:
        """Whether a submit wakes the threads whatever its ``wake`` says: where batches wait for arrivals, an
        arrival's end wakes them all."""
        return self.max_delay > 0

    def depth(self) -> int:
        """Jobs waiting for an engine."""
        return len(self._jobs)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Mark a request as on its way, so a forming batch waits for it; pass the Arrival to submit()."""
        arrival = Arrival()
        if not self.max_delay:  # a batch that never waits need not hear of arrivals (two locks and a wake-up less)
            arrival.ended = True
            yield arrival
            return
        with self._changed:
            self._arriving += 1
        try:
            yield arrival
        finally:
            with self._changed:
                self._end(arrival)

    def submit(
        self,
        tensor: np.ndarray,
        deadline: float,
        arrival: Arrival | None = None,
        on_done: Callable[[Job], None] | None = None,
        wake: bool = True,
    ) -> Job:
        """Queue one preprocessed image (ending its arrival); Overloaded when the queue is full. ``on_done``
        is told when the job ends (in the thread that ends it). ``wake=False`` leaves the batcher's threads
        asleep until a full batch (or a full queue) is queued: the caller calls wake() once it has queued what
        else it has. It changes nothing where batches wait for arrivals (``wakes_on_submit``): an arrival's end
        wakes them all."""
        job = Job(tensor, deadline, on_done)
        with self._changed:
            if arrival is not None:
                self._end(arrival)
            if len(self._jobs) >= self.max_queue:
                raise Overloaded(self.name)
            self._jobs.append(job)
            if wake or len(self._jobs) >= min(self.max_batch, self.max_queue):  # waiting cannot make a full batch
                self._changed.notify()  # bigger, and a full queue must be drained, not refuse the next
        return job

    def wake(self) -> None:
        """Wake a thread for each batch the queue holds (after submits with ``wake=False``)."""
        with self._changed:
            if self._jobs:
                self._changed.notify(-(-len(self._jobs) // self.max_batch))

    def close(self) -> None:
        """Stop the threads once the queue ahead of them is done."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for thread in self.threads:
            thread.join()
        for engine in self.engines:
            engine.close()

    def _end(self, arrival: Arrival) -> None:
        """Stop counting a request as arriving (once); the caller holds the condition."""
        if not arrival.ended:
            arrival.ended = True
            self._arriving -= 1
            self._changed.notify_all()

    def _loop(self, engine: Engine) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            if batch:
                self._run(engine, batch)

    def _gather(self) -> list[Job] | None:
        """The next batch: the first job, and those that come while requests are still on their way."""
        with self._changed:
            self._changed.wait_for(lambda: self._jobs or self._closing)
            if not self._jobs:
                return None  # closing, and nothing left to do
            batch: list[Job] = []
            close_at = time.monotonic() + self.max_delay
            while len(batch) < self.max_batch:
                if self._jobs:
                    job = self._jobs.popleft()
                    if job.start(time.monotonic()):
                        batch.append(job)
                    continue
                wait = close_at - time.monotonic()
                if not batch or self._arriving == 0 or self._closing or wait <= 0:
                    break
                self._changed.wait(wait)
            return batch

    def _run(self, engine: Engine, batch: list[Job]) -> None:
        started = time.monotonic()
        try:
            lone = batch[0].tensor if len(batch) == 1 and batch[0].tensor.flags.writeable else None
            tensors = lone[None] if lone is not None else np.stack([job.tensor for job in batch])
            outputs = engine.run(tensors)  # a lone image is a view of itself, writable as a stacked batch is
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
