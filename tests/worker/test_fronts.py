"""Front processes (--front-processes N): HTTP, decoding and answers in N processes, the models in one.

In this process first (both ends of the link over a socketpair: tensors through shared memory, answers, errors,
deadlines, a front that goes), then real workers: the same answers as one process gives, the rest of the API
passed through, batches across fronts, metrics and log lines, a front that dies, shutdown, tickets and TLS.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import requests
from graphs import TASK_MODELS, task_repository
from helpers import encode, sample, scrape, wait_until, write_sleepy_model, write_slow_loading_model
from pools import secured_pool

from visionpool.client.wire import Header
from visionpool.worker import WorkerSettings, create_app
from visionpool.worker.errors import Overloaded, ServiceError
from visionpool.worker.front import EngineLink, RemoteBatcher
from visionpool.worker.fronts import EngineHub, Link, error_fields, pack, relayed, unpack
from visionpool.worker.metrics import METRICS
from visionpool.worker.models import get_models

T = TypeVar("T")

# ---- in this process ----


class Linked:
    """A worker app's EngineHub and a front's EngineLink, joined by a socketpair and one shared region."""

    def __init__(self, root: Path, seconds: float, slots: int = 8, **batching: int) -> None:
        repository = write_sleepy_model(root, seconds, **batching)
        self.app = create_app(WorkerSettings(models=["sleepy"], model_repository=repository), background=False)
        self.models = get_models(self.app)
        ours, theirs = socket.socketpair()
        slot = 8 * 8 * 3 * 4  # the sleepy model's float32 input
        region = mmap.mmap(-1, slot * slots)
        self.hub_thread = EngineHub(self.models, self.app.extensions[METRICS]).attach(Link(ours), region, slot, 0, 1)
        self.engine = EngineLink(Link(theirs), region, slot, slots)
        self.lost = threading.Event()
        self.waits: dict[str, bool] = {}  # what the engine process says when ready: whose batches wait for arrivals
        self.engine.on_ready = self.waits.update
        threading.Thread(target=self.engine.receive, args=(self.lost.set,), daemon=True).start()
        config = self.models.configs[0]
        self.batcher = RemoteBatcher(self.engine, "sleepy", config.batching)

    def close(self) -> None:
        self.engine.link.close()
        self.hub_thread.join(10)
        self.models.close()


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[Linked]:
    pair = Linked(tmp_path, seconds=0.3, max_batch_size=4, max_queue_size=8)
    yield pair
    pair.close()


def tensor(value: float) -> np.ndarray:
    return np.full((3, 8, 8), value, np.float32)


def test_a_front_announces_arrivals_only_to_a_batcher_that_waits_for_them(linked: Linked) -> None:
    wait_until(lambda: linked.waits)
    assert linked.waits == {"sleepy": False}  # its config: max_queue_delay_ms = 0
    assert linked.models.get("sleepy").batcher.max_delay == 0


def test_a_tensor_goes_through_shared_memory_and_its_outputs_come_back(linked: Linked) -> None:
    jobs = [linked.batcher.submit(tensor(i), time.monotonic() + 10) for i in range(3)]
    for job in jobs:
        outputs = job.wait()
        assert outputs["logits"].shape == (3,) and outputs["logits"].dtype == np.float32
        assert job.batch_size >= 1 and job.inference_s >= 0.25
    assert sorted(linked.engine.free) == list(range(8))  # every slot back once answered
    assert not linked.engine.waiting


def test_a_tensor_with_no_free_slot_travels_in_its_message(tmp_path: Path) -> None:
    pair = Linked(tmp_path, seconds=0.05, slots=1, max_batch_size=4)
    try:
        jobs = [pair.batcher.submit(tensor(i), time.monotonic() + 10) for i in range(3)]  # one slot, three images
        assert [job.slot for job in jobs] == [0, None, None]
        assert all(job.wait()["logits"].shape == (3,) for job in jobs)
        big = pair.batcher.submit(np.zeros((3, 8, 8), np.float64), time.monotonic() + 10)  # bigger than a slot
        assert big.slot is None and big.wait()["logits"].shape == (3,)
    finally:
        pair.close()


def test_a_job_still_queued_at_its_deadline_is_dropped_and_answered_504(linked: Linked) -> None:
    running = [linked.batcher.submit(tensor(0), time.monotonic() + 10) for _ in range(4)]  # a full batch: 0.3 s
    started = time.monotonic()
    late = linked.batcher.submit(tensor(1), time.monotonic() + 0.1)
    with pytest.raises(ServiceError) as refused:
        late.wait()
    assert (refused.value.status, refused.value.code) == (504, "deadline_exceeded")
    assert time.monotonic() - started < 0.28  # dropped when asked, not when the engine got to it
    assert all(job.wait() for job in running)
    assert late.slot is not None and sorted(linked.engine.free) == list(range(8))


def test_a_full_queue_is_answered_as_one_process_answers_it(linked: Linked) -> None:
    jobs = [linked.batcher.submit(tensor(0), time.monotonic() + 10) for _ in range(16)]  # 4 running, 8 queued
    errors = []
    for job in jobs:
        try:
            job.wait()
        except ServiceError as error:
            errors.append(error)
    assert errors and all(e.status == 503 and e.code == "overloaded" for e in errors)
    assert errors[0].headers["Retry-After"] == "1"


def test_the_sender_stops_when_its_front_goes_even_with_answers_behind(tmp_path: Path) -> None:
    class Wire:
        def __init__(self) -> None:
            self.sent: list[list[tuple]] = []

        def send_many(self, messages: list[tuple]) -> None:
            self.sent.append(messages)

    outbox: queue.SimpleQueue = queue.SimpleQueue()
    for message in (("failed", 1), None, ("done", 2)):  # a running job ended after its front had gone
        outbox.put(message)
    wire = Wire()
    sender = threading.Thread(target=EngineHub._send_all, args=(None, wire, outbox), daemon=True)
    sender.start()
    sender.join(2)
    assert not sender.is_alive() and wire.sent == [[("failed", 1)]]


def test_send_soon_never_waits_and_every_message_arrives_in_order() -> None:
    """An event loop's messages to the engine process: with nothing read at the other end (the socket full), they
    still return at once, and reach the other end whole and in order, before a later blocking send's."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)  # a broken stream fails, never hangs
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # small buffers: full after a few messages
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    link, reader = Link(ours), Link(theirs)
    big = b"x" * 100_000  # over what send_soon tries at once, and over the socket's buffers

    def loop_sends() -> None:
        for i in range(500):
            link.send_soon(("m", i, big if i % 100 == 7 else b"y" * (i % 300)))

    sending = threading.Thread(target=loop_sends)
    sending.start()
    sending.join(10)
    assert not sending.is_alive()  # never waited for the reader
    blocking = threading.Thread(target=link.send, args=(("last", -1, b""),))  # a request thread's: it waits
    blocking.start()
    received = [reader.receive() for _ in range(501)]
    blocking.join(10)
    assert [m[1] for m in received] == [*range(500), -1]
    assert all(m[2] == (big if m[1] % 100 == 7 else b"y" * (m[1] % 300)) for m in received[:500])
    link.close()
    reader.close()


def test_event_loops_sending_at_once_through_a_small_buffer_keep_every_message_whole() -> None:
    """Writes the socket takes only in part (a small buffer, messages near send_soon's size) from several threads
    at once, the other end reading meanwhile: each message arrives whole, each thread's in its order."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)  # a broken stream fails, never hangs
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    link, reader = Link(ours), Link(theirs)
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 16_000, (3, 300))

    def sends(who: int) -> None:
        for seq, size in enumerate(sizes[who]):
            link.send_soon((who, seq, bytes([seq % 251]) * int(size)))

    threads = [threading.Thread(target=sends, args=(who,)) for who in range(3)]
    for thread in threads:
        thread.start()
    received = [reader.receive() for _ in range(sizes.size)]
    for thread in threads:
        thread.join(10)
    for who in range(3):
        mine = [m for m in received if m[0] == who]
        assert [m[1] for m in mine] == list(range(300))
        assert all(m[2] == bytes([m[1] % 251]) * int(sizes[who][m[1]]) for m in mine)
    link.close()
    reader.close()


class PartWriter:
    """A socket whose first non-blocking write takes half the message, and another thread writes meanwhile."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.meanwhile = sock, None

    def send(self, data: bytes, flags: int = 0) -> int:
        sent = self.sock.send(data[: len(data) // 2], flags)
        if (meanwhile := self.meanwhile) is not None:
            self.meanwhile = None
            other = threading.Thread(target=meanwhile)
            other.start()
            other.join()
        return sent

    def __getattr__(self, name: str):  # noqa: ANN204 - the rest is the socket's
        return getattr(self.sock, name)


def test_what_is_left_of_a_part_written_message_goes_before_what_others_queued() -> None:
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)  # a broken stream fails, never hangs
    wire = PartWriter(ours)
    link, reader = Link(wire), Link(theirs)  # type: ignore[arg-type]
    wire.meanwhile = lambda: link.send_soon(("second",))  # while the first is half written, the lock held
    link.send_soon(("first", b"f" * 1000))
    assert [reader.receive(), reader.receive()] == [("first", b"f" * 1000), ("second",)]
    link.close()
    reader.close()


def test_a_closing_link_writes_what_was_left_to_its_thread_first() -> None:
    """A front's last records at a stop go through send_soon and may be left to the link's thread: closing the
    link writes them before it closes."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)  # a broken stream fails, never hangs
    link, reader = Link(ours), Link(theirs)
    link.send_soon(("records", b"r" * 100_000))  # over what send_soon writes at once
    link.close()
    assert reader.receive() == ("records", b"r" * 100_000)
    with pytest.raises(EOFError):
        reader.receive()
    reader.close()


def test_errors_cross_with_status_code_message_and_headers() -> None:
    error = relayed(error_fields(Overloaded("sleepy", retry_after_s=3)))
    assert (error.status, error.code, error.headers["Retry-After"]) == (503, "overloaded", "3")
    assert error.message == "Model 'sleepy' has a full queue; retry after 3 s."
    assert relayed(error_fields(RuntimeError("boom"))).code == "engine_failed"  # never a traceback's words
    arrays = {"boxes": np.arange(12, dtype=np.float32).reshape(3, 4), "count": np.array(2.0, np.float64)}
    back = unpack(pack(arrays))
    assert all(np.array_equal(back[k], arrays[k]) and back[k].dtype == arrays[k].dtype for k in arrays)


def test_a_front_that_goes_leaves_no_arrival_or_job_behind(tmp_path: Path) -> None:
    pair = Linked(tmp_path, seconds=0.3, max_batch_size=4, max_queue_size=8)
    try:
        batcher = pair.models.get("sleepy").batcher
        batcher.max_delay, pair.batcher.announce = 5.0, True  # a batcher that waits for arrivals (full batches do not)
        arriving = pair.batcher.arriving()
        arriving.__enter__()  # announced, never submitted
        jobs = [pair.batcher.submit(tensor(0), time.monotonic() + 10) for _ in range(8)]
        ran = batcher.engines[0].model.batches  # the warm-up's, then each batch as it starts
        wait_until(lambda: batcher._arriving == 1 and len(ran) == 2)  # one batch running (not before: it may not)
        pair.engine.link.close()  # the front died
        pair.hub_thread.join(10)
        assert batcher._arriving == 0  # no batch waits for it
        wait_until(lambda: batcher.depth() == 0)
        for job in jobs:  # the front's side: each answered, none hangs
            with pytest.raises(ServiceError):
                job.wait()
        assert pair.lost.is_set()
        time.sleep(0.7)  # what was running has ended; nothing queued may start after it
        assert len(ran) == 2 and sum(ran[1:]) < 8  # the batch running when the front went; the rest dropped
    finally:
        pair.models.close()


# ---- real workers ----


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (its front processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


def post(url: str, data: bytes, content_type: str = "image/png", **headers: str) -> requests.Response:
    return requests.post(url, data=data, headers={"Content-Type": content_type, **headers}, timeout=30)


def at_once(count: int, call: Callable[[], T]) -> list[T]:
    """``call()`` from ``count`` threads at once (each request on a connection of its own), its results."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def without_timing(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "timing_ms"}


@pytest.mark.slow
def test_fronts_answer_every_task_and_refusal_as_one_process_does(start_worker, tmp_path: Path) -> None:
    repository = task_repository(tmp_path)
    args = ("--model", *TASK_MODELS, "--model-repository", str(repository))
    single = start_worker(*args)
    fronted = start_worker(*args, "--front-processes", "2")
    assert len(children(fronted.proc.pid)) == 2 and not children(single.proc.pid)
    picture = encode(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8), "JPEG")
    thumbnail = encode(np.random.default_rng(1).integers(0, 255, (96, 96, 3), np.uint8), "JPEG")  # the loop's
    paths = [f"/models/{name}/predict" for name in TASK_MODELS]
    paths += ["/predict?threshold=0.6", "/models/seg/predict?masks=png", "/models/yolo8/predict?top_k=1"]
    for path, image in itertools.product(paths, (picture, thumbnail)):
        one, many = post(single.url + path, image, "image/jpeg"), post(fronted.url + path, image, "image/jpeg")
        assert many.status_code == one.status_code == 200, (path, many.text)
        assert without_timing(many.json()) == without_timing(one.json()), path
        assert set(many.json()["timing_ms"]) == set(one.json()["timing_ms"])
    refusals = [
        (b"", "image/jpeg", "/predict"), (b"hello", "image/jpeg", "/predict"), (b"{}", "application/json", "/predict"),
        (picture, "image/jpeg", "/models/nope/predict"), (picture, "image/jpeg", "/predict?top_k=0"),
        (picture, "image/jpeg", "/models/seg/predict?masks=svg"),
    ]  # fmt: skip
    for data, content_type, path in refusals:
        one = post(single.url + path, data, content_type, **{Header.REQUEST_ID: "r-1"})
        many = post(fronted.url + path, data, content_type, **{Header.REQUEST_ID: "r-1"})
        assert (many.status_code, many.json()) == (one.status_code, one.json()), path
        assert many.headers[Header.REQUEST_ID] == "r-1" and one.status_code >= 400


@pytest.mark.slow
def test_the_rest_of_the_api_passes_through_and_metrics_count_the_fronts_requests(start_worker, tmp_path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0, max_batch_size=8, max_queue_size=64)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2")
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    assert requests.get(worker.url + "/healthz", timeout=5).json()["pid"] == worker.proc.pid  # the engine process
    assert requests.get(worker.url + "/models", timeout=5).json()["default"] == "sleepy"
    form = requests.post(worker.url + "/predict", files={"image": ("a.png", png, "image/png")}, timeout=10)
    assert form.status_code == 200 and form.json()["predictions"]  # a form: passed on, Flask parses it
    data = struct.pack("<I", len(png)) + png
    head = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": len(data)}}]}).encode()  # fmt: skip
    v2 = requests.post(worker.url + "/v2/models/sleepy/infer", data=head + data, timeout=10,
                       headers={"Inference-Header-Content-Length": str(len(head))})  # fmt: skip
    assert v2.status_code == 200 and v2.json()["model_name"] == "sleepy"  # the Open Inference Protocol, binary
    before = sample(scrape(worker.url), "visionpool_worker_requests_total", model="sleepy", status="200", outcome="ok")
    ids = [post(worker.url + "/predict", png).headers[Header.REQUEST_ID] for _ in range(20)]
    bad = post(worker.url + "/predict", b"nope")
    assert bad.status_code == 400

    def counted() -> bool:
        samples = scrape(worker.url)
        ok = sample(samples, "visionpool_worker_requests_total", model="sleepy", status="200", outcome="ok")
        refused = sample(samples, "visionpool_worker_requests_total", model="sleepy", status="400",
                         outcome="invalid_image")  # fmt: skip
        return ok == before + 20 and refused == 1

    wait_until(counted, timeout=5)  # each front sends its records every 0.1 s
    log = worker.output()
    assert all(f"request_id={rid}" in log for rid in ids)  # one line each, written by the engine process
    stats = requests.get(worker.url + "/stats", timeout=5).json()
    assert stats["state"] == "ready" and stats["in_flight"] == 0


@pytest.mark.slow
def test_images_through_the_fronts_share_batches(start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "batches"
    repository = write_sleepy_model(tmp_path / "models", 0.5, max_batch_size=8, max_queue_size=64, marker=marker)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2")
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    answers = at_once(12, lambda: post(worker.url + "/predict", png))
    assert [a.status_code for a in answers] == [200] * 12
    sizes = [int(n) for n in marker.read_text().split()][1:]  # after the warm-up's
    assert sum(sizes) == 12 and max(sizes) > 1
    assert max(a.json()["batch_size"] for a in answers) == max(sizes)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["PNG", "JPEG"])  # a request thread's; the event loop's
def test_a_request_queued_past_its_deadline_is_answered_504_by_the_front(start_worker, tmp_path: Path, kind) -> None:
    repository = write_sleepy_model(tmp_path / "models", 1.0, max_batch_size=1, max_queue_size=8)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "1",
                          "--request-timeout", "0.5")  # fmt: skip
    image = encode(np.zeros((8, 8, 3), np.uint8), kind)
    answers = at_once(3, lambda: post(worker.url + "/predict", image, f"image/{kind.lower()}"))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 504, 504]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 504} == {"deadline_exceeded"}


@pytest.mark.slow
def test_a_front_that_dies_is_replaced_and_the_worker_serves_on(start_worker, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0, max_batch_size=8, max_queue_size=64)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2")
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    first, second = children(worker.proc.pid)  # both listening: the worker is ready only then
    os.kill(first, signal.SIGKILL)  # connections it held, or the kernel had queued for it, are reset
    wait_until(lambda: "exited with -9" in worker.output())  # gone with all its threads, its socket with them
    answers = [post(worker.url + "/predict", png).status_code for _ in range(20)]  # a new connection each
    assert answers == [200] * 20  # the other front took them
    wait_until(lambda: len(children(worker.proc.pid)) == 2, timeout=15)
    replaced = children(worker.proc.pid)
    assert second in replaced and first not in replaced
    assert f"(pid {first}) exited with -9; restarting in 1 s" in worker.output()


@pytest.mark.slow
def test_a_front_that_cannot_start_stops_the_worker_saying_why(start_worker, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "1")
    config = repository / "sleepy" / "config.toml"
    config.write_text(config.read_text().replace('files = ["model.py"]', 'files = ["../x.onnx"]'))  # edited since
    [front] = children(worker.proc.pid)
    os.kill(front, signal.SIGKILL)  # its restarts read the broken config: none can start
    assert worker.proc.wait(60) == 1  # after three tries (1 + 2 + 4 s apart), not "loading" for ever
    log = worker.output()
    assert "front process 0 cannot start:" in log and "field 'files'" in log and "Traceback" not in log
    assert "stopping: front process 0 exited 3 times in a row before it took a connection" in log


@pytest.mark.slow
def test_sigterm_finishes_the_fronts_requests_and_leaves_nothing_behind(start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "batches"
    repository = write_sleepy_model(tmp_path / "models", 1.0, marker=marker)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2")
    fronts = children(worker.proc.pid)
    spec = json.loads(Path(f"/proc/{fronts[0]}/cmdline").read_bytes().split(b"\0")[-2])
    folder = Path(spec["engine"]).parent  # the engine process's Unix socket's
    assert folder.is_dir()
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    answer: list[requests.Response] = []
    request = threading.Thread(target=lambda: answer.append(post(worker.url + "/predict", png)))
    request.start()
    wait_until(lambda: marker.exists() and len(marker.read_text().split()) == 2)  # warm-up, then ours: running
    worker.proc.send_signal(signal.SIGTERM)
    request.join()
    assert answer[0].status_code == 200
    assert worker.proc.wait(30) == 0, worker.output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in fronts)
    assert not folder.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(worker.url + "/healthz", timeout=5)


@pytest.mark.slow
def test_a_killed_engine_process_takes_its_fronts_with_it(start_worker, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2")
    fronts = children(worker.proc.pid)
    worker.proc.kill()
    worker.proc.wait(10)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in fronts), timeout=10)


@pytest.mark.slow
def test_fronts_check_the_pools_tickets(start_proxy, start_worker, tmp_path: Path) -> None:
    pool = secured_pool(start_proxy, start_worker, tmp_path, "--front-processes", "2")
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    assert post(pool.proxy.url + "/predict", png, **pool.auth).status_code == 200  # through the proxy
    assert post(pool.worker.url + "/predict", png).status_code == 401  # straight to a front, no ticket
    lookup = requests.get(pool.proxy.url + "/lookup", headers=pool.auth, timeout=5).json()
    p2p = post(lookup["url"] + "/predict", png, Authorization=f"Bearer {lookup['ticket']}")
    assert p2p.status_code == 200 and p2p.json()["predictions"]


@pytest.mark.slow
def test_a_tickets_rate_is_counted_once_for_every_front(start_proxy, start_worker, tmp_path: Path) -> None:
    pool = secured_pool(start_proxy, start_worker, tmp_path, "--front-processes", "2", rate=4)  # burst 4
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    lookup = requests.get(pool.proxy.url + "/lookup", headers=pool.auth, timeout=5).json()
    bearer = {"Authorization": f"Bearer {lookup['ticket']}"}
    started = time.monotonic()
    codes = [post(lookup["url"] + "/predict", png, **bearer).status_code for _ in range(16)]  # new connections
    refilled = int((time.monotonic() - started) * 4) + 1  # what the bucket gained while they were sent
    assert codes.count(200) <= 4 + refilled and set(codes) == {200, 429}  # one count: not a burst per front
    assert codes.count(429) >= 16 - 4 - refilled


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_keep_alive_connections_spread_over_the_fronts(start_worker, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0, max_batch_size=8, max_queue_size=64)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2")
    fronts = children(worker.proc.pid)
    before = [cpu_seconds(pid) for pid in fronts]
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    sessions = [requests.Session() for _ in range(16)]  # one connection each, kept open: as a proxy's pool holds
    for _ in range(25):
        for session in sessions:
            answer = session.post(worker.url + "/predict", data=png, headers={"Content-Type": "image/png"}, timeout=10)
            assert answer.status_code == 200
    used = [cpu_seconds(pid) - start for pid, start in zip(fronts, before, strict=True)]
    assert min(used) > 0.1 * max(used), used  # both fronts answered a share (all 16 on one: 1 in 30,000)


@pytest.mark.slow
def test_a_port_in_use_stops_a_worker_with_fronts_before_it_loads(start_worker, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0)
    first = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2")
    second = subprocess.run(
        [sys.executable, "-m", "visionpool.worker", "--model", "sleepy", "--model-repository", str(repository),
         "--port", str(first.port), "--front-processes", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 2 and "Address already in use" in second.stderr  # not a second pool on one port


@pytest.mark.slow
def test_fronts_answer_not_ready_while_the_models_load(start_worker, tmp_path: Path) -> None:
    write_slow_loading_model(tmp_path, seconds=4.0)
    worker = start_worker("--model", "slow", "--model-repository", str(tmp_path), "--front-processes", "1",
                          ready=False)  # fmt: skip
    wait_until(lambda: _answers(worker.url + "/healthz"), timeout=30)  # a front listens; the model loads
    for data in (b"not an image", encode(np.zeros((8, 8, 3), np.uint8), "PNG")):
        answer = post(worker.url + "/predict", data)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "not_ready"  # as one process
    worker.wait_ready()
    assert post(worker.url + "/predict", encode(np.zeros((8, 8, 3), np.uint8), "PNG")).status_code == 200


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


BIG_OUTPUT_MODEL = """
import time
import numpy as np

class Model:
    def __init__(self, files, options):
        pass

    def run(self, batch):
        time.sleep(0.3)
        return {"logits": np.zeros((len(batch), 3), np.float32), "big": np.zeros((len(batch), 2_000_000), np.float32)}
"""


def posting(url: str, data: bytes, count: int, answers: list[int | str]) -> list[threading.Thread]:
    """``count`` uploads at once, each on a connection of its own; each answer's status (or "no answer")."""

    def one() -> None:
        try:
            answers.append(requests.post(url, data=data, headers={"Content-Type": "image/png"}, timeout=8).status_code)
        except requests.RequestException:
            answers.append("no answer")

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.slow
def test_a_stalled_front_holds_up_no_other(start_worker, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0, max_batch_size=4, max_queue_size=64)
    (repository / "sleepy" / "1" / "model.py").write_text(BIG_OUTPUT_MODEL)  # 8 MB of outputs an image
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2",
                          "--request-timeout", "5")  # fmt: skip
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    stalled, _ = children(worker.proc.pid)
    first: list[int | str] = []
    first_wave = posting(worker.url + "/predict", png, 8, first)
    time.sleep(0.2)  # in the engine process now (a batch takes 0.3 s)
    os.kill(stalled, signal.SIGSTOP)  # reads nothing from now on: its answers pile up in the engine process
    try:
        second: list[int | str] = []
        for thread in posting(worker.url + "/predict", png, 12, second):
            thread.join(30)
        served = [a for a in second if a != "no answer"]  # the rest went to the stopped front
        assert served and set(served) == {200}  # the other front's images ran and came back, none 504
    finally:
        os.kill(stalled, signal.SIGCONT)
    for thread in first_wave:
        thread.join(30)


def test_a_killed_engine_processs_socket_folder_is_removed_by_the_next() -> None:
    from visionpool.worker.fronts import FOLDER_PREFIX, _remove_stale_folders

    root = Path(tempfile.gettempdir())
    dead = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}999999999-", dir=root))  # no such process
    alive = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-", dir=root))
    try:
        _remove_stale_folders()
        assert not dead.exists() and alive.is_dir()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


@pytest.mark.slow
def test_metrics_add_up_every_fronts_front_door(start_worker, tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", 0.0)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository), "--front-processes", "2",
                          "--max-body-bytes", "1000")  # fmt: skip
    answers = [post(worker.url + "/predict", b"x" * 5000).status_code for _ in range(6)]  # connections: both fronts
    assert answers == [413] * 6
    wait_until(lambda: sample(scrape(worker.url), "visionpool_worker_front_door_events_total", event="too_large") == 6)
