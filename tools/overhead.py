"""``visionpool bench --targets overhead``: the CPU a worker spends per request around the pipeline, beside
gunicorn + Flask doing the same work, in one run.

Both serve a classifier whose model does no work (zeros for 10 classes): the worker as ``visionpool worker``
with the Python engine and no line per request (``--log-level WARNING``: gunicorn writes no access log unless
asked), the peer as ``gunicorn -k gthread`` (1 process, 4 threads) running ``PEER`` below:
decode the JPEG with Pillow, resize it to the model's 224x224, run the no-op model, softmax, the top 5 as JSON.
The same closed loop of clients posts the same small JPEG to each in turn; each server's CPU (user + system,
from /proc) over the measured seconds, divided by the requests answered, is its cost per request.

Usage:
    rows = measure(images, concurrency=8, seconds=10, warmup=2)     # [{server, versions, images_per_s, ...}]
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

from visionpool.client import wire

from .loadgen import closed_loop, cpu_clock

SIZE = 224  # the model's input: what both servers resize to
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


def measure(images: Sequence[bytes], concurrency: int, seconds: float, warmup: float) -> list[dict[str, Any]]:
    """One row per server (the worker, then gunicorn + Flask when gunicorn is installed): rate, cores, CPU-ms."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="visionpool-overhead-") as scratch:
        folder = Path(scratch)
        for name, start in (("visionpool worker", _worker), ("gunicorn + Flask", _gunicorn)):
            with start(folder) as (url, clock, versions):
                if url is None:
                    rows.append({"server": name, "versions": versions})
                    continue
                measured = asyncio.run(
                    closed_loop(name, url, "proxy", None, images, concurrency, seconds, warmup, {"server": clock})
                )
                row = measured.row(0.0)
                if row["errors"]:
                    log = (folder / ("worker.log" if name.startswith("visionpool") else "gunicorn.log")).read_text()
                    raise SystemExit(f"visionpool bench: {name} answered {row['errors']} requests with errors; "
                                     f"its log ends:\n{log[-2000:]}")  # fmt: skip
                rows.append({"server": name, "versions": versions, "concurrency": concurrency,
                             "images_per_s": row["images_per_s"], "errors": row["errors"],
                             "cores": row.get("server_cores"), "cpu_ms_per_request": row.get("server_cpu_ms"),
                             "p50_ms": row["p50_ms"]})  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["server              CPU-ms/request  req/s   cores  p50 ms  versions"]
    for row in rows:
        if "cpu_ms_per_request" not in row:
            lines.append(f"{row['server']:<19} (not measured: {row['versions']})")
            continue
        lines.append(f"{row['server']:<19} {row['cpu_ms_per_request']!s:>14} {row['images_per_s']:>6} "
                     f"{row['cores']!s:>6} {row['p50_ms']:>7}  {row['versions']}")  # fmt: skip
    measured = [r for r in rows if r.get("cpu_ms_per_request")]
    if len(measured) == 2:
        ratio = measured[1]["cpu_ms_per_request"] / measured[0]["cpu_ms_per_request"]
        lines.append(f"gunicorn + Flask spends {ratio:.2f}x the worker's CPU per request")
    return "\n".join(lines)


@contextlib.contextmanager
def _worker(folder: Path) -> Iterator[tuple[str | None, Callable[[], float], str]]:
    model = folder / "models" / "noop"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(NOOP_MODEL)
    (model / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (model / "config.toml").write_text(CONFIG)
    port = free_port()
    command = [sys.executable, "-m", "visionpool.worker", "--model", "noop", "--model-repository",
               str(folder / "models"), "--port", str(port), "--no-supervise", "--log-level", "WARNING",
               "--registry", "none"]  # fmt: skip
    with running(command, f"http://127.0.0.1:{port}", folder / "worker.log") as process:
        yield f"http://127.0.0.1:{port}", cpu_clock(process.pid), versions("visionpool", "aiohttp", "flask")


@contextlib.contextmanager
def _gunicorn(folder: Path) -> Iterator[tuple[str | None, Callable[[], float], str]]:
    if not installed("gunicorn"):
        yield None, lambda: 0.0, "gunicorn is not installed: pip install gunicorn"
        return
    (folder / "overhead_peer.py").write_text(PEER)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(folder), "-w", "1", "-k", "gthread", "--threads",
               "4", "-b", f"127.0.0.1:{port}", "overhead_peer:app"]  # fmt: skip
    with running(command, f"http://127.0.0.1:{port}", folder / "gunicorn.log", path="/predict") as process:
        yield f"http://127.0.0.1:{port}", family_clock(process.pid), versions("gunicorn", "flask", "pillow")


@contextlib.contextmanager
def running(
    command: list[str], url: str, log: Path, path: str = wire.READYZ, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server started, ready (GET ``path`` answers, or POST for the peer's only route), then stopped."""
    with log.open("wb") as output:  # none of this shell's VISIONPOOL_* settings: a registry, a secret, TLS
        environ = {k: v for k, v in (env or os.environ).items() if not k.startswith("VISIONPOOL_")}
        environ.update({k: v for k, v in (env or {}).items() if k.startswith("VISIONPOOL_PEER")})
        process = subprocess.Popen(command, stdout=output, stderr=output, env={**environ, "PYTHONUNBUFFERED": "1"},
                                   start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"visionpool bench: {command[2]} failed to start:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(url + path, timeout=1)
                if answer.status_code in (200, 405):  # 405: the peer listens (it takes POST only)
                    break
            time.sleep(0.1)
        else:
            raise SystemExit(f"visionpool bench: {url} not ready after 60 s")
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (gunicorn's workers too), SIGKILL when it has not gone in 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def family_clock(pid: int) -> Callable[[], float]:
    """CPU seconds of a process and its children (gunicorn's master and its worker)."""
    clocks = [cpu_clock(pid)]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        clocks += [cpu_clock(int(child)) for child in children]
    return lambda: sum(clock() for clock in clocks)


def versions(*packages: str) -> str:
    found = []
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{package} {importlib.metadata.version(package)}")
    return ", ".join(found)


def installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
