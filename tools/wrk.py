"""The bench's load from wrk (a load generator in C) instead of Python clients: ``--load-generator wrk``.

Usage:
    m = measure_load("wrk", "worker", "http://127.0.0.1:8000", "proxy", None, images, 64, 10, 2, clocks)
    m = wrk_loop("worker", "http://127.0.0.1:8000/predict", images, concurrency=64, seconds=10, warmup=2)

Why: the Python clients cost 0.2-0.5 CPU-ms per request themselves. On a small host they share the cores with
the server and take a third of them at 2,000 requests/s, so a server that could use every core cannot; on a
GPU host they need several cores of their own to send 10,000 images/s. wrk sends the same images (raw bodies,
in turn) from one thread per 64 connections and costs a few hundredths of a core. It posts raw bodies only:
the p2p and v2 targets keep the Python clients. Bounded in time (wrk's own duration, then a timeout).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from visionpool.client.wire import predict_path

from .loadgen import Measurement, closed_loop

LOAD_GENERATORS = ("python", "wrk")
CONNECTIONS_PER_THREAD = 64
MAX_THREADS = 8
SCRIPT = """
local files = {%(files)s}
local requests = {}
local next_one = 0

function init(args)
  for i, name in ipairs(files) do
    local file = assert(io.open(name, "rb"))
    requests[i] = wrk.format("POST", nil, {["Content-Type"] = "application/octet-stream"}, file:read("*a"))
    file:close()
  end
end

function request()
  next_one = next_one %% #requests + 1
  return requests[next_one]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("visionpool %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def installed() -> bool:
    return shutil.which("wrk") is not None


def measure_load(load: str, target: str, url: str, mode: str, model: str | None, images: Sequence[bytes],
                 concurrency: int, seconds: float, warmup: float,
                 clocks: dict[str, Callable[[], float]] | None = None) -> Measurement:  # fmt: skip
    """One closed-loop measurement of ``url`` (``model`` in ``mode``, as the client sends it), its load from
    ``load``: python (the client's own) or wrk, which posts raw bodies, so p2p's two steps stay the client's."""
    if load == "wrk" and mode == "proxy":
        return wrk_loop(target, url + predict_path(model), images, concurrency, seconds, warmup, clocks)
    return asyncio.run(closed_loop(target, url, mode, model, images, concurrency, seconds, warmup, clocks))


def wrk_loop(
    target: str,
    url: str,
    images: Sequence[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    clocks: dict[str, Callable[[], float]] | None = None,
) -> Measurement:
    """``concurrency`` connections posting the images in turn to ``url`` for ``seconds`` (whole seconds, at
    least one) after ``warmup``; the servers' ``clocks`` read around the measured run."""
    if not installed():
        raise SystemExit("visionpool bench: --load-generator wrk needs wrk on the PATH (apt-get install wrk)")
    result = Measurement(target, concurrency)
    with tempfile.TemporaryDirectory(prefix="visionpool-wrk-") as scratch:
        folder = Path(scratch)
        names = []
        for i, image in enumerate(images):
            (folder / f"{i}.img").write_bytes(image)
            names.append(f'"{folder / f"{i}.img"}"')
        script = folder / "post.lua"
        script.write_text(SCRIPT % {"files": ", ".join(names)})
        if warmup > 0:
            _run(url, script, concurrency, warmup)
        started = {name: read() for name, read in (clocks or {}).items()}
        began = time.monotonic()
        line = _run(url, script, concurrency, seconds)
        elapsed = time.monotonic() - began
        result.cpu = {name: read() - started[name] for name, read in (clocks or {}).items()}
    answered, duration_us, connect, read, write, status, timeout, *quantiles_us = (int(v) for v in line.split()[1:])
    result.seconds = elapsed  # the same span as the CPU clocks (wrk's own: duration_us, without its start)
    result.images = answered - status
    result.errors = connect + read + write + status + timeout
    result.latency_ms = {q: us / 1000.0 for q, us in zip((50.0, 90.0, 99.0), quantiles_us, strict=True)}
    return result


def _run(url: str, script: Path, concurrency: int, seconds: float) -> str:
    """One wrk run; the summary line its script writes."""
    threads = min(MAX_THREADS, max(1, concurrency // CONNECTIONS_PER_THREAD))
    whole = max(1, round(seconds))
    command = ["wrk", f"-t{threads}", f"-c{max(concurrency, threads)}", f"-d{whole}s", "--timeout", "60s",
               "-s", str(script), url]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=whole + 90, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("visionpool ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"visionpool bench: wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")
    return lines[-1]
