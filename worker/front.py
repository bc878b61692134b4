"""One front process of a worker (worker/fronts.py says why and what crosses between them).

Usage (the worker starts these itself, with --front-processes N):
    python -m visionpool.worker.front '{"host": HOST, "port": PORT, "link": FD, "tensors": FD, ...}'

It listens on the worker's port (SO_REUSEPORT, beside the other fronts) with the worker's own front door (limits,
TLS, tickets): a raw upload to /predict or /models/NAME/predict is decoded, preprocessed, run by the engine
process and postprocessed here, with the code a single-process worker runs (worker/fast.py, routes.predict_answer,
Pipeline) and a batcher that is the engine process's, at the other end of the link; every other request passes,
body and headers, to the engine process over its Unix socket. Settings come as the worker's VISIONPOOL_*
variables. It stops on SIGTERM (finishing what it holds), and when the engine process is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import mmap
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from flask import Flask
from multidict import CIMultiDict
from yarl import URL

from visionpool.discovery.kv import load_secret
from visionpool.serving.frontdoor import ENCODINGS, FrontDoor, Limits, run
from visionpool.serving.lifecycle import Lifecycle
from visionpool.serving.options import from_args
from visionpool.serving.tickets import Tickets

from .errors import ServiceUnavailable
from .fast import direct_predict
from .fronts import Link, error_fields, relayed, unpack
from .metrics import METRICS, Tracked, tracking
from .models import EXTENSION, ModelManager
from .pipeline import Pipeline
from .repository import BatchingSpec
from .settings import WorkerSettings
from .supervisor import die_with_parent
from .wsgi import http_app, ticket_guard

logger = logging.getLogger(__name__)
HOP_BY_HOP = {
    *("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"),
    *("content-length", "expect"),
}


class RemoteJob:
    """One image handed to the engine process: Job's face (wait, queue_s, inference_s, batch_size)."""

    def __init__(
        self,
        engine: EngineLink,
        rid: int,
        deadline: float,
        slot: int | None,
        on_done: Callable[[RemoteJob], None] | None = None,
    ) -> None:
        self.engine, self.rid, self.deadline, self.slot = engine, rid, deadline, slot
        self.on_done = on_done  # told when the answer comes (in the link's reader thread), as Job.on_done is
        self.queue_s = self.inference_s = 0.0
        self.batch_size = 0
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: Exception | None = None
        self.done = threading.Event()

    def abandon(self) -> None:
        """At the deadline (Pipeline.predict_here's timer), or when its request is cancelled: the engine process
        drops the job if it is still queued, and answers it DeadlineExceeded; else its answer is a batch away."""
        if not self.done.is_set():
            self.engine.send_quietly(("cancel", self.rid))

    def wait(self) -> dict[str, np.ndarray]:
        """The outputs; at the deadline the engine process is asked to drop the job if it is still queued (its
        answer is then DeadlineExceeded), else the answer is a batch away."""
        if not self.done.wait(max(self.deadline - time.monotonic(), 0.0)):
            self.abandon()
            self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.outputs is not None
        return self.outputs


class RemoteArrival:
    def __init__(self, rid: int) -> None:
        self.rid, self.ended = rid, False


class EngineLink:
    """The front's end of the link: tensors into shared-memory slots, answers handed to the waiting threads."""

    def __init__(self, link: Link, region: mmap.mmap, slot_size: int, slots: int) -> None:
        self.link, self.region, self.slot_size = link, region, slot_size
        self.free = list(range(slots))
        self.waiting: dict[int, RemoteJob] = {}
        self.lost = threading.Event()
        self.on_ready: Callable[[dict[str, bool]], None] = lambda waits: None  # the engine process's models are ready
        self.taking: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def new_id(self) -> int:
        return next(self._ids)

    def send_quietly(self, message: tuple[Any, ...]) -> None:
        """A message whose loss does not matter once the link is gone; never waits (Link.send_soon)."""
        with contextlib.suppress(OSError):
            self.link.send_soon(message)

    async def take(self, ticket: str, rate: float, burst: float) -> None:
        """Count one request against a ticket's rate in the engine process (one count for every front);
        RateLimited when it is over."""
        loop, rid = asyncio.get_running_loop(), self.new_id()
        answer: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self.taking[rid] = (loop, answer)
        try:
            if self.lost.is_set():
                raise OSError("the link is gone")
            self.link.send_soon(("take", rid, ticket, rate, burst))  # never waits: this is the event loop
        except OSError:
            with self._lock:
                self.taking.pop(rid, None)
            raise _gone() from None
        refused = await answer
        if refused is not None:
            raise relayed(refused)

    def _took(self, rid: int, refused: Any) -> None:
        with self._lock:
            waiting = self.taking.pop(rid, None)
        if waiting is not None:
            loop, answer = waiting
            with contextlib.suppress(RuntimeError):  # its loop closed: the front is stopping
                loop.call_soon_threadsafe(_settle, answer, refused)

    def submit(
        self,
        rid: int,
        model: str,
        tensor: np.ndarray,
        deadline: float,
        on_done: Callable[[RemoteJob], None] | None = None,
    ) -> RemoteJob:
        """Hand one tensor to the engine process. With ``on_done`` (an event loop's job: Pipeline.predict_here)
        the message never waits for the socket; without, a request thread waits while the socket is full."""
        with self._lock:
            slot = self.free.pop() if self.free and tensor.nbytes <= self.slot_size else None
            job = self.waiting[rid] = RemoteJob(self, rid, deadline, slot, on_done)
        if slot is None:
            message: tuple[Any, ...] = ("submit", rid, model, None, tensor.shape, tensor.dtype.str, deadline, tensor)
        else:
            view = np.ndarray(tensor.shape, tensor.dtype, buffer=self.region, offset=slot * self.slot_size)
            view[...] = tensor
            message = ("submit", rid, model, slot, tensor.shape, tensor.dtype.str, deadline, None)
        if self.lost.is_set():
            self._end(rid, error=_gone())
        else:
            try:
                if on_done is None:
                    self.link.send(message)
                else:
                    self.link.send_soon(message)
            except OSError:
                self._end(rid, error=_gone())
        return job

    def receive(self, on_lost: Any) -> None:
        """Hand each answer to its job (in a thread of its own) until the link closes; then fail the rest."""
        try:
            while True:
                message = self.link.receive()
                if message[0] == "ready":
                    self.on_ready(message[1])
                elif message[0] == "took":
                    self._took(message[1], message[2])
                elif message[0] == "done":
                    _, rid, outputs, queue_s, inference_s, batch_size = message
                    self._end(rid, unpack(outputs), queue_s, inference_s, batch_size)
                else:
                    self._end(message[1], error=relayed(message[2]))
        except (EOFError, OSError):
            pass
        except Exception:
            logger.exception("the link to the engine process failed")
        self.lost.set()
        with self._lock:
            left, taking = list(self.waiting), list(self.taking)
        for rid in left:
            self._end(rid, error=_gone())
        for rid in taking:
            self._took(rid, error_fields(_gone()))
        on_lost()

    def _end(
        self,
        rid: int,
        outputs: dict[str, np.ndarray] | None = None,
        queue_s: float = 0.0,
        inference_s: float = 0.0,
        batch_size: int = 0,
        error: Exception | None = None,
    ) -> None:
        with self._lock:
            job = self.waiting.pop(rid, None)
            if job is None:
                return
            if job.slot is not None:
                self.free.append(job.slot)  # the engine process is done with it: it answered
        job.outputs, job.error = outputs, error
        job.queue_s, job.inference_s, job.batch_size = queue_s, inference_s, batch_size
        job.done.set()
        if job.on_done is not None:
            job.on_done(job)


def _settle(answer: asyncio.Future[Any], refused: Any) -> None:
    if not answer.done():
        answer.set_result(refused)


def _gone() -> ServiceUnavailable:
    return ServiceUnavailable("The worker's engine process is gone; retry.", retry_after=1)


class RemoteBatcher:
    """The engine process's batcher for one model, as the front's Pipeline uses it (arriving, submit)."""

    def __init__(self, engine: EngineLink, name: str, spec: BatchingSpec) -> None:
        self.engine, self.name = engine, name
        self.announce = spec.max_queue_delay_ms > 0  # only a batcher that waits for arrivals needs to hear of them
        # (and the engine process says, when ready, whether its batcher does: not for an engine on a CPU)
        self.wakes_on_submit = True  # each job goes to the engine process at once, which wakes its own batcher

    @contextlib.contextmanager
    def arriving(self) -> Iterator[RemoteArrival | None]:
        if not self.announce:
            yield None
            return
        arrival = RemoteArrival(self.engine.new_id())
        self.engine.send_quietly(("arrive", arrival.rid, self.name))
        try:
            yield arrival
        finally:
            if not arrival.ended:
                self.engine.send_quietly(("leave", arrival.rid))

    def submit(
        self,
        tensor: np.ndarray,
        deadline: float,
        arrival: RemoteArrival | None = None,
        on_done: Callable[[RemoteJob], None] | None = None,
        wake: bool = True,
    ) -> RemoteJob:
        """Sent at once, whatever ``wake`` says."""
        rid = self.engine.new_id() if arrival is None else arrival.rid
        if arrival is not None:
            arrival.ended = True
        return self.engine.submit(rid, self.name, tensor, deadline, on_done)


class RemoteMetrics:
    """WorkerMetrics' face for the predict path: each request's record goes to the engine process, which counts
    and logs it as its own; sent in bunches (every RECORDS_EVERY seconds or RECORDS_AT records), not one by one."""

    RECORDS_EVERY = 0.1
    RECORDS_AT = 64

    def __init__(self, engine: EngineLink) -> None:
        self.engine = engine
        self._kept: list[tuple[tuple[Any, ...], float]] = []
        self._sent = time.monotonic()
        self._lock = threading.Lock()

    def track(self, model: str, request_id: str) -> contextlib.AbstractContextManager[Tracked]:
        return tracking(model, request_id, self._record)

    def _record(self, request: Tracked, seconds: float) -> None:
        # Tracked's fields, in order: the engine process makes one of them again
        fields = (request.model, request.request_id, request.stages, request.batch_size, request.status,
                  request.outcome)  # fmt: skip
        with self._lock:
            self._kept.append((fields, seconds))
            due = len(self._kept) >= self.RECORDS_AT or time.monotonic() - self._sent >= self.RECORDS_EVERY
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            kept, self._kept, self._sent = self._kept, [], time.monotonic()
        if kept:
            self.engine.send_quietly(("records", kept))

    async def flush_every(self, door: FrontDoor) -> None:
        """Send what is kept at least every RECORDS_EVERY seconds, however quiet the front is, and the front door's
        counts (the engine process's /metrics adds up every front's)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.RECORDS_EVERY)
            state = door.state()  # read in the loop's thread, which changes it
            await loop.run_in_executor(None, self._send, state)  # a send may wait: never in the event loop

    def _send(self, state: Any) -> None:
        self.flush()
        self.engine.send_quietly(("door", state))


class FrontServer(Lifecycle):
    """A front process: the worker's port, its predict path, and a pass-through for the rest."""

    def __init__(self, settings: WorkerSettings, spec: dict[str, Any]) -> None:
        super().__init__()
        self.settings, self.spec = settings, spec
        region = mmap.mmap(spec["tensors"], spec["slot_bytes"] * spec["slots"])
        os.close(spec["tensors"])
        self.engine = EngineLink(Link(socket.socket(fileno=spec["link"])), region, spec["slot_bytes"], spec["slots"])
        self.metrics = metrics = RemoteMetrics(self.engine)
        self.models = ModelManager(settings, metrics)  # type: ignore[arg-type] # configs and decoders, no engines
        pipelines = {
            config.name: Pipeline(
                config, self.models.decoders[config.name], RemoteBatcher(self.engine, config.name, config.batching),
                None, settings.max_image_pixels,  # type: ignore[arg-type] # no engine here
            )
            for config in self.models.configs
        }  # fmt: skip
        # until then: NotReady, before decoding, as one process
        self.engine.on_ready = lambda waits: self._ready(pipelines, waits)
        self.app = Flask(__name__, instance_path=str(Path(__file__).parent / "instance"))
        self.app.config.update(VISIONPOOL=settings, WORKER_ID=spec["worker_id"])
        self.app.extensions[METRICS] = metrics
        self.app.extensions[EXTENSION] = self.models

    def _ready(self, pipelines: dict[str, Pipeline], waits: dict[str, bool]) -> None:
        for name, pipeline in pipelines.items():
            pipeline.batcher.announce = waits.get(name, pipeline.batcher.announce)  # type: ignore[attr-defined]
        self.models.models.update(pipelines)
        self.models.ready.set()

    async def serve(self) -> int:
        self.install_signal_handlers()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self.engine.receive, args=(lambda: _call_soon(loop, self.should_exit.set),),
            name="engine-link", daemon=True,
        ).start()  # fmt: skip
        settings = self.settings
        guard = None
        if settings.pool_secret_file is not None:
            secret = load_secret(settings.pool_secret_file, settings.consul_url, settings.consul_token)
            guard = ticket_guard(Tickets(secret, self.spec["worker_id"]), self.models.default, self.engine.take)
        connector = aiohttp.UnixConnector(path=self.spec["engine"], limit=0)
        timeout = aiohttp.ClientTimeout(total=settings.request_timeout + settings.drain_timeout + 30)
        skip = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")  # the client's own headers only
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, skip_auto_headers=skip, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:  # no jar: a cookie one client is answered with is never sent for another
            door = FrontDoor(Limits.of(settings))
            http = http_app(door, settings.threads, _pass_on(session), guard, direct_predict(self.app))
            tls = self.listening_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            await door.start(http, door.listen_shared(self.spec["host"], self.spec["port"]), tls)
            self.engine.send_quietly(("listening",))  # the worker is ready once every front is
            flushing = asyncio.create_task(self.metrics.flush_every(door))
            await self.should_exit.wait()
            await door.stop()
            flushing.cancel()
            self.metrics.flush()
        self.engine.link.close()
        return 0


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """``callback`` in the loop's thread, unless the loop has closed already (the front is stopping anyway)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def _pass_on(session: aiohttp.ClientSession) -> Any:
    """What answers every request the front does not: the engine process, over its Unix socket."""

    async def pass_on(request: web.Request, body: bytes, work: ThreadPoolExecutor) -> web.StreamResponse:
        decoded = request.headers.get("Content-Encoding", "").strip().lower() in ENCODINGS  # the door inflated it
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in HOP_BY_HOP and not (decoded and name.lower() == "content-encoding")
        )
        url = URL(f"http://worker{request.raw_path}", encoded=True)
        try:
            async with session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False, auto_decompress=False
            ) as answer:
                payload = await answer.read()
        except (aiohttp.ClientError, TimeoutError):
            raise _gone() from None
        kept = CIMultiDict((name, value) for name, value in answer.headers.items() if name.lower() not in HOP_BY_HOP)
        return web.Response(status=answer.status, headers=kept, body=payload)

    return pass_on


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    die_with_parent()
    if os.getppid() != spec["parent"]:  # the engine process died before that took hold
        return 0
    settings = from_args(WorkerSettings, argparse.Namespace(), os.environ)
    settings.configure_logging()
    try:
        return run(FrontServer(settings, spec).serve())
    except (ValueError, OSError) as error:  # a config changed since the engine process read it, a port, a file
        logger.error("front process %s cannot start: %s", spec["index"], error)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
