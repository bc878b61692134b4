"""Front processes: the HTTP, decoding, preprocessing and answers of a worker in several processes, its models
in one.

Usage:
    visionpool worker --front-processes 3 ...

Why: a Python process runs one thread of Python at a time (the GIL), and a worker spends most of a CPU-ms of
Python per request around its model (docs/performance.md): one process could hand a GPU about a thousand images a
second, and keeps about one core busy however many the host has. With front processes, each takes connections on
the worker's port (a listening socket of its own, SO_REUSEPORT: the kernel spreads connections over the fronts by
their addresses, so a client's keep-alive connections land on several), reads the upload, decodes and preprocesses
it, and hands the tensor to this process (the engine process) through shared memory: the slot's number over a
socket. This process queues the tensors of every front in one batcher per model, as it queues its own, runs the
model and sends each front its outputs; the front postprocesses them and answers. The model is loaded once, on one
device, and batches across every front, while the Python around it runs on every core (the Triton shape: its front
end in C++ and the model behind it). Everything else a front is asked (health, readiness, /models, /metrics,
/stats, the v2 protocol, forms, the page) it passes to this process over a Unix socket, so each answer is the one
a single process gives; the predict requests the fronts answered are counted and logged here (a record each), so
/metrics and the log read as one worker's.

The wire between a front and this process is a socketpair; each message is a pickle (both ends are this program)
behind its length. A front's request threads write theirs and wait while the socket is full; its event loop (which
answers thumbnails itself) never waits: Link.send_soon leaves what the socket cannot take at once to a thread.
From a front: ("listening",) once it takes connections, ("take", id, ticket, rate, burst),
("arrive", id, model), ("leave", id), ("submit", id, model, slot, shape, dtype, deadline, tensor or None),
("cancel", id), ("records", [(Tracked's fields, seconds), ...]), ("door", its front door's state). To a front:
("ready", {model: whether its batches wait for arrivals, so whether to announce them}) once the models are,
("took", id, refusal or None), ("done", id, outputs, queue_s, inference_s, batch_size) and ("failed", id, (status,
code, message, headers)). A tensor bigger than a slot, or sent while every slot is taken, travels in the message
itself.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import mmap
import os
import pickle
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from visionpool.client.wire import ServiceError
from visionpool.serving.frontdoor import DoorState
from visionpool.serving.options import to_environ
from visionpool.serving.tickets import Tickets

from .batching import Job
from .errors import EngineFailed
from .metrics import Tracked, WorkerMetrics
from .models import ModelManager
from .preprocess import preprocess
from .settings import WorkerSettings
from .supervisor import BACKOFF_MAX, HEALTHY_RUN  # a front restarts as a worker does

logger = logging.getLogger(__name__)
HEADER = struct.Struct("<I")
MAX_SHARED_BYTES = 1 << 30  # a front's slots at most (pages are only taken when a slot is first written)
FOLDER_PREFIX = "visionpool-worker-"  # then the engine process's pid: its Unix socket's folder
SUBMITTING = object()  # a job being submitted: its answer may come before submit() returns
CLOSE_WAIT = 5.0  # seconds a closing link may take to write what is left
SOON_BYTES = 16 * 1024  # Link.send_soon tries to write a message up to this size at once (one socket buffer)
MAX_FAILED_STARTS = 3  # a front that exits this many times in a row before listening stops the worker


class Link:
    """One end of a socket carrying pickled messages, each behind its length; send() from any thread, send_soon()
    from an event loop too."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb", buffering=1 << 16)
        self._lock = threading.Lock()  # held by whoever writes to the socket
        self._deferred: collections.deque[bytes] = collections.deque()  # written, in order, before anything else
        self._wake = threading.Event()
        self._sender: threading.Thread | None = None
        self._starting = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        """Write the message, waiting while the socket is full; OSError when the other end is gone."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._drain()
            if len(data) < 1 << 16:
                self.sock.sendall(HEADER.pack(len(data)) + data)
            else:  # a tensor or outputs: not copied again to join the header
                self.sock.sendall(HEADER.pack(len(data)))
                self.sock.sendall(data)

    def send_soon(self, message: tuple[Any, ...]) -> None:
        """Write the message now if the socket takes it at once, else leave it to a thread of the link's own (which
        writes it after every message left to it before): never waits, so an event loop may call it. OSError when
        the other end is gone; a later failure closes the link, which its reader sees."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        data = HEADER.pack(len(data)) + data
        if len(data) <= SOON_BYTES and not self._deferred and self._lock.acquire(blocking=False):
            try:
                if not self._deferred:
                    try:  # a Unix socket takes a message this small whole or not at all
                        sent = self.sock.send(data, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        sent = 0
                    if sent == len(data):
                        return
                    # what is left of it goes before anything else, even what others queued meanwhile
                    self._deferred.appendleft(data[sent:])
                else:
                    self._deferred.append(data)
            finally:
                self._lock.release()
        else:
            self._deferred.append(data)
        with self._starting:
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_deferred, name="link-sender", daemon=True)
                self._sender.start()
        self._wake.set()

    def _drain(self) -> None:
        """Write what was left to the link's thread, first (the caller holds the lock)."""
        while self._deferred:
            self.sock.sendall(self._deferred[0])
            self._deferred.popleft()  # only once written: until then, later messages queue behind it

    def _send_deferred(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                with self._lock:
                    self._drain()
            except Exception as error:
                if not isinstance(error, OSError):  # the other end is gone: nothing to say
                    logger.exception("the link's sender failed; closing the link")
                self._deferred.clear()
                self._close()  # the reader sees it and fails whatever waits
                return

    def send_many(self, messages: list[tuple[Any, ...]]) -> None:
        """Several messages in one write (OSError when the other end is gone)."""
        if len(messages) == 1:
            self.send(messages[0])
            return
        pickled = [pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL) for message in messages]
        data = b"".join(HEADER.pack(len(one)) + one for one in pickled)
        with self._lock:
            self._drain()
            self.sock.sendall(data)

    def receive(self) -> tuple[Any, ...]:
        """The next message; EOFError when the other end closed."""
        header = self._reader.read(HEADER.size)
        if len(header) < HEADER.size:
            raise EOFError
        (size,) = HEADER.unpack(header)
        data = self._reader.read(size)
        if len(data) < size:
            raise EOFError
        return pickle.loads(data)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Write what is left to the link's thread (a stop's last records; for a few seconds at most), then close."""
        if self._deferred and self._lock.acquire(timeout=CLOSE_WAIT):
            try:
                self.sock.settimeout(CLOSE_WAIT)
                self._drain()
            except OSError:
                pass
            finally:
                self._lock.release()
        self._close()

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def pack(arrays: dict[str, np.ndarray]) -> list[tuple[str, str, tuple[int, ...], bytes]]:
    """Arrays as plain tuples of their bytes: a tenth of the time numpy's own pickling takes for small ones."""
    return [(name, array.dtype.str, array.shape, array.tobytes()) for name, array in arrays.items()]


def unpack(packed: list[tuple[str, str, tuple[int, ...], bytes]]) -> dict[str, np.ndarray]:
    return {name: np.frombuffer(data, np.dtype(dtype)).reshape(shape) for name, dtype, shape, data in packed}


def error_fields(error: BaseException | None) -> tuple[int, str, str, dict[str, str]]:
    """An error as it crosses to a front: the status, code, message and headers it is answered with."""
    if not isinstance(error, ServiceError):
        error = EngineFailed("The model failed to run; the worker log has the details.")
    return error.status, error.code, error.message, dict(error.headers)


def relayed(fields: tuple[int, str, str, dict[str, str]]) -> ServiceError:
    """The error a front raises for one this process answered (same status, code, message and headers)."""
    status, code, message, headers = fields
    error = ServiceError(message, headers=headers)
    error.status, error.code = status, code
    return error


def slot_bytes(models: ModelManager) -> int:
    """The largest preprocessed input of these models, in bytes: one shared-memory slot."""
    largest = 0
    for config in models.configs:
        grey = np.full((config.input.height, config.input.width, 3), 128, np.uint8)
        largest = max(largest, preprocess(grey, config.input)[0].nbytes)
    return largest


class EngineHub:
    """This process's end of every front's link: tensors in, into the models' batchers; outputs back."""

    def __init__(self, models: ModelManager, metrics: WorkerMetrics) -> None:
        self.models, self.metrics = models, metrics
        self.tickets: Tickets | None = None  # with a pool secret: each ticket's rate, counted once for all fronts
        self.listening: set[int] = set()  # the fronts (by index) that have ever said they listen
        self.doors: dict[int, DoorState] = {}  # each front's front door, as it last said
        self.retired: collections.Counter[str] = collections.Counter()  # events of fronts since restarted
        self._doors_lock = threading.Lock()

    def door_state(self) -> DoorState:
        """The fronts' front doors together: events since the worker started, connections and bytes held now."""
        with self._doors_lock:
            events = collections.Counter(self.retired)
            connections = buffered = 0
            for counts, open_now, held in self.doors.values():
                events.update(counts)
                connections, buffered = connections + open_now, buffered + held
        return dict(events), connections, buffered

    def attach(self, link: Link, region: mmap.mmap, slot_size: int, index: int, count: int) -> threading.Thread:
        """Serve front ``index``'s link in a thread of its own, until the front goes; the models are ready for
        requests once all ``count`` fronts have listened."""
        thread = threading.Thread(
            target=self._serve, args=(link, region, slot_size, index, count), name=f"front-{index}-link", daemon=True
        )
        thread.start()
        return thread

    def _serve(self, link: Link, region: mmap.mmap, slot_size: int, index: int, count: int) -> None:
        jobs: dict[int, Job | object] = {}
        arrivals: dict[int, Any] = {}  # id -> (the batcher's arriving() context, its Arrival)
        lock = threading.Lock()  # jobs: added here, removed by the thread that ends each
        # answers leave through a thread of their own: the batcher's threads (which end jobs, sometimes under the
        # batcher's lock) never wait on a front that reads slowly or not at all; a front has at most one request
        # per thread outstanding, so this queue is bounded
        outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        threading.Thread(target=self._send_all, args=(link, outbox), name=f"front-{index}-out", daemon=True).start()
        threading.Thread(target=self._tell_ready, args=(outbox,), name=f"front-{index}-ready", daemon=True).start()

        def done(rid: int, job: Job) -> None:
            with lock:
                if jobs.pop(rid, None) is None:
                    return  # answered already
            self.metrics.in_flight.dec()
            if job.error is not None:
                message: tuple[Any, ...] = ("failed", rid, error_fields(job.error))
            else:
                message = ("done", rid, pack(job.outputs or {}), job.queue_s, job.inference_s, job.batch_size)
            outbox.put(message)

        def submit(rid: int, name: str, slot: int | None, shape: tuple[int, ...], dtype: str, deadline: float,
                   inline: np.ndarray | None) -> None:  # fmt: skip
            held = arrivals.pop(rid, None)
            try:
                model = self.models.get(name)  # NotReady, ModelNotFound: answered as the front would
                if inline is None:
                    offset = (slot or 0) * slot_size
                    tensor = np.ndarray(shape, np.dtype(dtype), buffer=region, offset=offset)
                else:
                    tensor = inline
                with lock:
                    jobs[rid] = SUBMITTING  # so that an answer that comes first finds it
                self.metrics.in_flight.inc()
                queued = model.batcher.submit(tensor, deadline, held[1] if held else None, lambda j: done(rid, j))
                with lock:
                    if jobs.get(rid) is SUBMITTING:
                        jobs[rid] = queued
            except ServiceError as error:
                with lock:
                    placeholder = jobs.pop(rid, None)
                if placeholder is not None:
                    self.metrics.in_flight.dec()
                outbox.put(("failed", rid, error_fields(error)))
            finally:
                if held is not None:
                    held[0].__exit__(None, None, None)

        try:
            while True:
                message = link.receive()
                kind = message[0]
                if kind == "submit":
                    submit(*message[1:])
                elif kind == "records":
                    for fields, seconds in message[1]:
                        self.metrics.record(Tracked(*fields), seconds)
                elif kind == "arrive":
                    rid, name = message[1:]
                    model = self.models.models.get(name)
                    if model is not None:
                        context = model.batcher.arriving()
                        arrivals[rid] = (context, context.__enter__())
                elif kind == "leave":
                    held = arrivals.pop(message[1], None)
                    if held is not None:
                        held[0].__exit__(None, None, None)
                elif kind == "take":
                    _, rid, signature, rate, burst = message
                    refused: tuple[int, str, str, dict[str, str]] | None = None
                    try:
                        if self.tickets is not None:
                            self.tickets.take(signature, rate, burst)
                    except Exception as error:  # RateLimited; anything else is that request's 500, not the link's
                        if not isinstance(error, ServiceError):
                            logger.exception("counting a ticket failed")
                        refused = error_fields(error)
                    outbox.put(("took", rid, refused))
                elif kind == "door":
                    with self._doors_lock:
                        self.doors[index] = message[1]
                elif kind == "listening":
                    self.listening.add(index)
                    if len(self.listening) >= count and self.models.fronts_listening is not None:
                        self.models.fronts_listening.set()
                elif kind == "cancel":
                    with lock:
                        job = jobs.get(message[1])
                    if isinstance(job, Job):
                        job.abandon()  # still queued: answered DeadlineExceeded now; else when it has run
        except (EOFError, OSError):
            pass  # the front stopped or died
        except Exception:
            logger.exception("a front process's link failed")
        finally:
            for context, _ in arrivals.values():
                context.__exit__(None, None, None)
            with lock:
                left = [job for job in jobs.values() if isinstance(job, Job)]
            for job in left:
                job.abandon()  # not run for nobody
            outbox.put(None)
            link.close()
            with self._doors_lock:  # its counts stay in the totals; a restarted front counts from 0
                gone = self.doors.pop(index, None)
                if gone is not None:
                    self.retired.update(gone[0])

    def _send_all(self, link: Link, outbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
        """Send a front its answers in order; once it is gone, drop them."""
        stop = False
        while not stop:
            messages: list[tuple[Any, ...]] = []
            message = outbox.get()
            while message is not None:
                messages.append(message)
                if len(messages) >= 64 or outbox.empty():
                    break
                message = outbox.get()  # those that came meanwhile: one write for all
            stop = message is None  # the link closed: what was queued before goes, nothing after
            if messages:
                with contextlib.suppress(OSError):  # the front is gone: nobody to tell
                    link.send_many(messages)

    def _tell_ready(self, outbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
        """Tell a front when the models are ready: until then it answers NotReady, as this process does."""
        self.models.ready.wait()
        outbox.put(("ready", {name: model.batcher.max_delay > 0 for name, model in self.models.models.items()}))


class Front:
    """One front process and its end of the link."""

    def __init__(self, index: int, process: subprocess.Popen[bytes], started: float) -> None:
        self.index, self.process, self.started = index, process, started
        self.delay = 1.0
        self.restart_at: float | None = None
        self.failed_starts = 0  # exits in a row before it ever took a connection


class Fronts:
    """The worker's front processes: started on its port, restarted when one dies, stopped last."""

    def __init__(
        self,
        settings: WorkerSettings,
        port: socket.socket,
        hub: EngineHub,
        models: ModelManager,
        worker_id: str,
    ) -> None:
        self.settings, self.hub, self.worker_id = settings, hub, worker_id
        self.address = port.getsockname()[:2]  # held by the engine process, listened on by each front
        self.count = settings.front_processes
        self.slot_size = max(slot_bytes(models), 1)
        self.slots = max(1, min(settings.threads, MAX_SHARED_BYTES // self.slot_size))  # a slot per request thread
        _remove_stale_folders()
        # 0700: only this user reaches the socket; named by this pid, so a later worker removes it if this
        # process is killed before it can
        self.folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
        self.path = os.path.join(self.folder, "engine.sock")
        self.internal = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.internal.bind(self.path)
        self.internal.listen(256)
        self.environ = {**os.environ, **to_environ(settings)}
        self.fronts: list[Front] = []
        self.stopping = threading.Event()
        self.failure: str | None = None  # a front that cannot start: the worker stops, saying so
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="fronts", daemon=True)

    def start(self) -> None:
        with self._lock:
            self.fronts = [self._start(index) for index in range(self.count)]
        self._watcher.start()

    def pids(self) -> list[int]:
        with self._lock:
            return [front.process.pid for front in self.fronts]

    def signal(self, sig: signal.Signals) -> None:
        with self._lock:
            for front in self.fronts:
                with contextlib.suppress(ProcessLookupError):
                    front.process.send_signal(sig)

    def stop(self, timeout: float) -> None:
        """SIGTERM every front (each stops taking connections and finishes what it holds), then wait for them."""
        self.stopping.set()
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with self._lock:
            fronts = list(self.fronts)
        for front in fronts:
            try:
                front.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.error("front process %d did not stop in %.0f s; killing it", front.process.pid, timeout)
                front.process.kill()
                front.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)  # the socket itself is the engine process's door's to close

    def _start(self, index: int) -> Front:
        self.hub.listening.discard(index)  # until this process of it says it listens
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        size = self.slot_size * self.slots
        memory = os.memfd_create(f"visionpool-front-{index}")  # no name in /dev/shm: nothing to leak on a crash
        try:
            os.ftruncate(memory, size)
            region = mmap.mmap(memory, size)
            spec = {
                "index": index,
                "parent": os.getpid(),
                "host": self.address[0],
                "port": self.address[1],
                "link": theirs.fileno(),
                "tensors": memory,
                "slot_bytes": self.slot_size,
                "slots": self.slots,
                "engine": self.path,
                "worker_id": self.worker_id,
            }
            command = [sys.executable, "-m", "visionpool.worker.front", json.dumps(spec)]
            fds = (theirs.fileno(), memory)
            # a session of its own: a signal to the worker's process group (honcho, Ctrl-C) reaches the engine
            # process, which deregisters first and then stops the fronts (each dies with it: PR_SET_PDEATHSIG)
            process = subprocess.Popen(command, env=self.environ, pass_fds=fds, start_new_session=True)
        finally:
            theirs.close()
            os.close(memory)
        self.hub.attach(Link(ours), region, self.slot_size, index, self.count)
        logger.info("front process %d started (pid %d)", index, process.pid)
        return Front(index, process, time.monotonic())

    def _watch(self) -> None:
        """Restart a front that died (with backoff), until the worker stops."""
        while not self.stopping.wait(0.2):
            with self._lock:
                for i, front in enumerate(self.fronts):
                    code = front.process.poll()
                    if code is None or self.stopping.is_set():
                        continue
                    now = time.monotonic()
                    if self.failure is not None:
                        continue
                    if front.restart_at is None:
                        front.delay = 1.0 if now - front.started > HEALTHY_RUN else front.delay
                        front.restart_at = now + front.delay
                        listened = front.index in self.hub.listening
                        front.failed_starts = 0 if listened else front.failed_starts + 1
                        if front.failed_starts >= MAX_FAILED_STARTS:
                            self.failure = (
                                f"front process {front.index} exited {front.failed_starts} times in a row before it "
                                f"took a connection (last with {code}); its lines above say why"
                            )
                            continue
                        logger.error(
                            "front process %d (pid %d) exited with %s; restarting in %.0f s",
                            front.index, front.process.pid, code, front.delay,
                        )  # fmt: skip
                    elif now >= front.restart_at:
                        delay, failed = min(front.delay * 2, BACKOFF_MAX), front.failed_starts
                        self.fronts[i] = self._start(front.index)
                        self.fronts[i].delay, self.fronts[i].failed_starts = delay, failed



def _remove_stale_folders() -> None:
    """The Unix-socket folders of engine processes (of this user) that died without removing theirs."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        pid = folder.name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid() or Path(f"/proc/{pid}").exists():
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
