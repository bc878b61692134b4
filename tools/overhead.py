"""``visionpool bench --targets overhead``: the CPU a worker spends per request around the pipeline, beside
gunicorn + Flask doing the same work, in one run.

Both serve a classifier whose model does no work (zeros for 10 classes): the worker as ``visionpool worker``
with the Python engine and no line per request (``--log-level WARNING``: gunicorn writes no access log unless
asked), the peer as ``gunicorn -k gthread`` (1 process, 4 threads) running ``PEER`` below:
decode the JPEG with Pillow, resize it to the model's 224x224, run the no-op model, softmax, the top 5 as JSON.
The same closed loop of clients posts the same small JPEG to each in turn; each server's CPU (user + system,
from /proc) over the measured seconds, divided by the requests answered, is its cost per request. Of that, the
worker's pipeline stages (decode, preprocess, postprocess: the work gunicorn's app does too) took what its stage
histograms say ("in stages", wall time in the thread that ran them); the rest is what the worker adds around them.

Usage:
    rows = measure(images, concurrency=8, seconds=10, warmup=2)     # [{server, versions, images_per_s, ...}]
"""

from __future__ import annotations

import contextlib
import functools
import io
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import requests
from prometheus_client.parser import text_string_to_metric_families

from .servers import family_clock, free_port, gunicorn_command, installed, running, settle, versions
from .wrk import measure_load

SIZE = 224  # the model's input: what both servers resize to
STAGE_METRIC = "visionpool_worker_stage_duration_seconds"
PIPELINE_STAGES = ("decode", "preprocess", "postprocess")  # the work both servers do; not queue, inference
LABELS = [f"class-{i}" for i in range(10)]
NOOP_MODEL = '''import numpy as np


class Model:
    max_batch_size = 64

    def __init__(self, files, options):
        pass

    def run(self, batch):
        return {"scores": np.zeros((batch.shape[0], 10), np.float32)}
'''
CONFIG = f'''task = "classification"
engine = "python"
files = ["model.py"]
labels = "labels.txt"
[input]
width = {SIZE}
height = {SIZE}
[output]
decoder = "softmax"
score_threshold = 0.0
top_k = 5
[batching]
max_batch_size = 64
max_queue_delay_ms = 0
'''
PEER = f'''"""gunicorn + Flask doing what the worker does around a model that does no work (visionpool bench)."""
import io

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

app = Flask(__name__)
LABELS = {LABELS!r}


@app.post("/predict")
def predict():
    image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
    width, height = image.size
    pixels = np.asarray(image.resize(({SIZE}, {SIZE}), Image.BILINEAR), np.float32)[None] / 255.0
    scores = np.zeros((pixels.shape[0], 10), np.float32)[0]
    p = np.exp(scores - scores.max())
    p /= p.sum()
    top = np.argsort(-p)[:5]
    found = [{{"label": LABELS[i], "class_id": int(i), "score": round(float(p[i]), 4)}} for i in top]
    return jsonify(model={{"name": "noop", "version": "1"}}, image={{"width": width, "height": height}},
                   predictions=found)
'''


def small_jpeg() -> bytes:
    """A 64x64 photo-like JPEG: the request whose cost is all overhead."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(128, 40, (64, 64, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def measure(
    images: Sequence[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    fronts: int = 0,
    load: str = "python",
    cpus: frozenset[int] | None = None,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """One row per server (the worker, with ``fronts`` front processes, then gunicorn + Flask when gunicorn is
    installed), each on ``cpus`` when given, its load from ``load`` (python or wrk): rate, cores, CPU-ms. Both
    run at once and are measured ``rounds`` times in turn, the order reversed every other round (worker, gunicorn,
    gunicorn, worker, ...), each once both are at rest, so that a host's drift falls on both alike (the idle one
    costs next to nothing: a front process wakes ten times a second), each round in processes started for it: a
    process keeps a speed of its own for its life (two workers of one build, measured in turn here, differed by up
    to 3%, the same way in five or six of six windows of one start and not of the next), so each round draws both
    anew. A row is its server's
    median round (the upper of an even count), with the CPU-ms per request of every round in
    ``rounds_cpu_ms_per_request`` (round i of each server side by side) and its processes' ids in ``rounds_pids``."""
    worker = f"visionpool worker ({fronts} front processes)" if fronts else "visionpool worker"
    starts = ((worker, functools.partial(_worker, fronts=fronts)), ("gunicorn + Flask", _gunicorn))
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in starts}
    not_started: dict[str, str] = {}  # a server that could not start: why
    with tempfile.TemporaryDirectory(prefix="visionpool-overhead-") as scratch:
        for turn in range(rounds):
            with contextlib.ExitStack() as stack:
                folder = Path(scratch) / f"round-{turn + 1}"
                folder.mkdir()
                servers = [(name, stack.enter_context(start(folder, cpus=cpus))) for name, start in starts]
                both = [served.clock for _, served in servers if served.url is not None]
                for name, served in servers if turn % 2 == 0 else servers[::-1]:
                    if served.url is None:
                        not_started[name] = served.versions
                        continue
                    settle(both)  # the other's last requests answered (tools/servers.py)
                    window = _window(name, served, name == worker, images, concurrency, seconds, warmup, load)
                    measured[name].append({"server": name, "versions": served.versions, "pid": served.pid,
                                           **window})  # fmt: skip
    return [_median(measured[name]) if measured[name] else {"server": name, "versions": not_started[name]}
            for name, _ in starts]  # fmt: skip


def _window(
    name: str,
    served: Served,
    ours: bool,
    images: Sequence[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    load: str,
) -> dict[str, Any]:
    """One server measured once: its rate, cores, CPU-ms per request and (the worker's) pipeline stages."""
    url = served.url
    assert url is not None
    stages = _pipeline_seconds(url) if ours else None  # gunicorn's app keeps no stage histograms
    clocks = {"server": served.clock}
    measured = measure_load(load, name, url, "proxy", None, images, concurrency, seconds, warmup, clocks)
    row = measured.row(0.0)
    if row["errors"]:
        raise SystemExit(f"visionpool bench: {name} answered {row['errors']} requests with errors; "
                         f"its log ends:\n{served.log.read_text(errors='replace')[-2000:]}")  # fmt: skip
    pipeline_ms = None
    if stages is not None:  # over the warm-up and the measured seconds
        spent, images_done = (after - before for after, before in zip(_pipeline_seconds(url), stages, strict=True))
        pipeline_ms = round(1000 * spent / images_done, 3) if images_done else None
    return {"concurrency": concurrency, "images_per_s": row["images_per_s"], "errors": row["errors"],
            "cores": row.get("server_cores"), "cpu_ms_per_request": row.get("server_cpu_ms"),
            "p50_ms": row["p50_ms"], "pipeline_ms_per_request": pipeline_ms}  # fmt: skip


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A server's round of median CPU per request, with every round's figure in the order measured."""
    ranked = sorted(rounds, key=lambda r: r["cpu_ms_per_request"] or 0.0)
    return {**ranked[len(ranked) // 2], "rounds_cpu_ms_per_request": [r["cpu_ms_per_request"] for r in rounds],
            "rounds_pids": [r["pid"] for r in rounds]}  # fmt: skip


def _pipeline_seconds(url: str) -> tuple[float, float]:
    """From a worker's /metrics: the seconds its requests spent so far in the pipeline's own stages (decode,
    preprocess, postprocess: the work gunicorn's app does too), and the images they were spent on."""
    spent = images = 0.0
    for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if sample.name == f"{STAGE_METRIC}_sum" and stage in PIPELINE_STAGES:
                spent += sample.value
            elif sample.name == f"{STAGE_METRIC}_count" and stage == PIPELINE_STAGES[0]:
                images += sample.value
    return spent, images


def table(rows: list[dict[str, Any]]) -> str:
    width = max(19, *(len(row["server"]) for row in rows))
    lines = [f"{'server':<{width}} CPU-ms/request  in stages  req/s   cores  p50 ms  versions"]
    for row in rows:
        if "cpu_ms_per_request" not in row:
            lines.append(f"{row['server']:<{width}} (not measured: {row['versions']})")
            continue
        stages = "" if row.get("pipeline_ms_per_request") is None else row["pipeline_ms_per_request"]
        lines.append(f"{row['server']:<{width}} {row['cpu_ms_per_request']!s:>14} {stages!s:>10} "
                     f"{row['images_per_s']:>6} {row['cores']!s:>6} {row['p50_ms']:>7}  {row['versions']}")  # fmt: skip
    measured = [r for r in rows if r.get("cpu_ms_per_request")]
    if len(measured) == 2:
        lines.append(f"gunicorn + Flask spends {_ratio(*measured)} the worker's CPU per request")
    if (worker := measured[:1]) and worker[0].get("pipeline_ms_per_request") is not None:
        around = worker[0]["cpu_ms_per_request"] - worker[0]["pipeline_ms_per_request"]
        lines.append(f"the worker's CPU per request around its pipeline's stages: {around:.3f} ms")
    return "\n".join(lines)


def _ratio(worker: dict[str, Any], peer: dict[str, Any]) -> str:
    """gunicorn's CPU per request over the worker's: of the median rounds, or the median of the rounds side by side
    (each pair measured minutes apart at most) with their range."""
    rounds = zip(worker["rounds_cpu_ms_per_request"], peer["rounds_cpu_ms_per_request"], strict=True)
    pairs = [p / w for w, p in rounds if w and p]
    if len(pairs) < 2:
        return f"{peer['cpu_ms_per_request'] / worker['cpu_ms_per_request']:.2f}x"
    pairs.sort()
    return f"{statistics.median(pairs):.2f}x (median of {len(pairs)} rounds in turn; {pairs[0]:.2f}-{pairs[-1]:.2f}x)"


class Served(NamedTuple):
    """A server the overhead target started (or could not)."""

    url: str | None  # None: not started (gunicorn is not installed)
    clock: Callable[[], float]  # its CPU seconds so far
    versions: str  # what it runs, or why it did not start
    log: Path
    pid: int | None = None  # its (first) process


@contextlib.contextmanager
def _worker(folder: Path, fronts: int = 0, cpus: frozenset[int] | None = None) -> Iterator[Served]:
    model = folder / "models" / "noop"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(NOOP_MODEL)
    (model / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (model / "config.toml").write_text(CONFIG)
    port = free_port()
    command = [sys.executable, "-m", "visionpool.worker", "--model", "noop", "--model-repository",
               str(folder / "models"), "--port", str(port), "--no-supervise", "--log-level", "WARNING",
               "--registry", "none", "--front-processes", str(fronts)]  # fmt: skip
    log = folder / "worker.log"
    with running(command, f"http://127.0.0.1:{port}", log, cpus=cpus) as process:
        yield Served(f"http://127.0.0.1:{port}", family_clock(process.pid), versions("visionpool", "aiohttp", "flask"),
                     log, process.pid)  # fmt: skip


@contextlib.contextmanager
def _gunicorn(folder: Path, cpus: frozenset[int] | None = None) -> Iterator[Served]:
    log = folder / "gunicorn.log"
    if not installed("gunicorn"):
        yield Served(None, lambda: 0.0, "gunicorn is not installed: pip install gunicorn", log)
        return
    (folder / "overhead_peer.py").write_text(PEER)
    port = free_port()
    command = gunicorn_command(folder, "overhead_peer:app", port)
    with running(command, f"http://127.0.0.1:{port}", log, path="/predict", cpus=cpus) as process:
        yield Served(f"http://127.0.0.1:{port}", family_clock(process.pid), versions("gunicorn", "flask", "pillow"),
                     log, process.pid)  # fmt: skip
