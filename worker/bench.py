"""``visionpool bench``: how fast the pool serves, against the engine's own limit, in one run.

Usage:
    visionpool bench --model-repository models --model ssd-mobilenet-v2      # starts its own pool on loopback
    visionpool bench --url http://pool:8080 --model ssd-mobilenet-v2          # measures a running pool

Measures (1) the engine limit: the model's own predict pipeline in this process (decode,
preprocess, one engine call per batch, postprocess: ``Pipeline.predict_batch``), at each
batch size; (2) one worker directly; (3) the pool through the proxy; (4) the pool in
p2p mode: each at every concurrency, closed loop, for a fixed time after a warm-up. It
lives with the worker because the engine limit runs the worker's own pipeline; the load
comes from the client's ``loadgen``. Load goes only to the URLs given (or the loopback
pool it starts), bounded in time and in count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
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
from visionpool.client.commands import Command
from visionpool.client.loadgen import (
    Measurement,
    closed_loop,
    cpu_clock,
    on_this_machine,
    paired_overhead,
    sample_images,
    table,
)

from .pipeline import Pipeline

SOAK_CHECKPOINT = 1_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="a running pool's proxy; default: start one on loopback")
    parser.add_argument("--model", default="coco-ssd", help="the model to measure (default coco-ssd)")
    parser.add_argument(
        "--model-repository",
        default=None,
        help="where the model is (for the engine limit and the pool started here); default: the built-in repository",
    )
    parser.add_argument("--images", nargs="*", default=[], help="image files or folders (default: generated photos)")
    parser.add_argument("--concurrency", default="1,4,16,64", help="client counts to measure (default 1,4,16,64)")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16", help="engine batch sizes tried for the limit")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    parser.add_argument("--targets", default="engine,worker,proxy,p2p", help="what to measure")
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        help="then send this many requests to the worker and "
        f"compare its memory after the first {SOAK_CHECKPOINT} with the end",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    targets = set(args.targets.split(","))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    images = sample_images(args.images)
    report: dict[str, Any] = {"model": args.model, "images": len(images), "duration_s": args.duration}
    engine = _engine(args, images) if "engine" in targets else []
    limit = max((m.rate for m in engine), default=0.0)
    report["engine_limit_images_per_s"] = round(limit, 1)
    rows = [m.row(limit) for m in engine]
    with _pool(args) as (proxy, worker):
        report["proxy"], report["worker"] = proxy, worker
        clocks = _clocks({"worker": worker, "proxy": proxy})
        for target, url, mode in (("worker", worker, "proxy"), ("proxy", proxy, "proxy"), ("p2p", proxy, "p2p")):
            if target in targets:
                watched = {name: clock for name, clock in clocks.items() if name == "worker" or target != "worker"}
                rows += _series(target, url, mode, args, images, concurrencies, limit, report, watched)
        if {"worker", "proxy"} <= targets:
            report["proxy_overhead"] = asyncio.run(
                paired_overhead(worker, proxy, args.model, images, max(args.duration, 5.0))
            )
        if args.soak:
            report["soak"] = _soak(worker, args.model, images, args.soak)
    report["rows"] = rows
    print(table(rows))
    print(_findings(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=2)
    return 0


def _engine(args: argparse.Namespace, images: list[bytes]) -> list[Measurement]:
    """The engine limit of the model, loaded and warmed up exactly as a worker does it."""
    from .metrics import WorkerMetrics
    from .models import ModelManager
    from .settings import WorkerSettings

    settings = WorkerSettings(models=[args.model], max_image_pixels=10**9)
    if args.model_repository:
        settings.model_repository = Path(args.model_repository)
    models = ModelManager(settings, WorkerMetrics(dict))
    models.load_all()
    if models.failure is not None:
        raise models.failure
    try:
        pipeline = models.get(args.model)
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        batch_sizes = sizes if pipeline.config.batching.max_batch_size > 1 else [1]
        return engine_limit(pipeline, images, batch_sizes, args.duration / 2)
    finally:
        models.close()


def engine_limit(
    pipeline: Pipeline, images: Sequence[bytes], batch_sizes: Sequence[int], seconds: float
) -> list[Measurement]:
    """The model alone in this process: its whole pipeline, one batch after another, at each batch size."""
    results = []
    source = itertools.cycle(images)
    for batch_size in batch_sizes:
        pipeline.predict_batch([images[0]] * batch_size)  # warm-up at this shape
        result = Measurement("engine", batch_size)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            t0 = time.monotonic()
            pipeline.predict_batch([next(source) for _ in range(batch_size)])
            result.latencies.append(time.monotonic() - t0)
            result.images += batch_size
        result.seconds = time.monotonic() - started
        results.append(result)
    return results


def _series(
    target: str,
    url: str,
    mode: str,
    args: argparse.Namespace,
    images: list[bytes],
    concurrencies: list[int],
    limit: float,
    report: dict[str, Any],
    clocks: dict[str, Callable[[], float]],
) -> list[dict[str, Any]]:
    """One target at every concurrency (with the CPU its servers used); the bytes the proxy carried meanwhile."""
    rows = []
    carried = _proxy_bytes(report["proxy"])
    for concurrency in concurrencies:
        load = closed_loop(target, url, mode, args.model, images, concurrency, args.duration, args.warmup, clocks)
        m = asyncio.run(load)
        rows.append(m.row(limit))
    if target != "worker" and carried is not None:
        after = _proxy_bytes(report["proxy"])
        report.setdefault("proxy_bytes", {})[target] = after - carried if after is not None else None
    return rows


def _clocks(servers: dict[str, str]) -> dict[str, Callable[[], float]]:
    """CPU readers of the servers that run on this machine (their pid from /healthz), by name."""
    clocks = {}
    for name, url in servers.items():
        if not on_this_machine(url):
            continue
        with contextlib.suppress(requests.RequestException, KeyError, ValueError, OSError):
            clock = cpu_clock(int(requests.get(url + wire.HEALTHZ, timeout=5).json()["pid"]))
            clock()  # readable: the process is really here
            clocks[name] = clock
    return clocks


def _proxy_bytes(proxy: str) -> float | None:
    """Bytes the proxy has carried so far (both directions), from its /metrics."""
    try:
        text = requests.get(proxy + wire.METRICS, timeout=5).text
    except requests.RequestException:
        return None
    lines = text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("visionpool_proxy_bytes_total"))


def _soak(worker: str, model: str, images: list[bytes], count: int) -> dict[str, Any]:
    """Memory of the worker after the first SOAK_CHECKPOINT requests and after ``count``."""

    def rss() -> float:
        text = requests.get(worker + wire.METRICS, timeout=5).text
        return next(
            float(line.split()[1]) for line in text.splitlines() if line.startswith("process_resident_memory_bytes")
        )

    first = min(SOAK_CHECKPOINT, count)
    asyncio.run(_requests(worker, model, images, first))
    early = rss()
    asyncio.run(_requests(worker, model, images, count - first))
    late = rss()
    return {
        "requests": count,
        "checkpoint": first,
        "rss_after_first_mb": round(early / 1e6, 1),
        "rss_at_end_mb": round(late / 1e6, 1),
        "growth_percent": round((late - early) / early * 100, 2),
    }


async def _requests(url: str, model: str, images: list[bytes], count: int, concurrency: int = 16) -> None:
    """Exactly ``count`` predictions, ``concurrency`` at a time."""
    from visionpool.client.aio import AsyncClient

    numbers = iter(range(count))
    async with AsyncClient(url, mode="proxy", model=model, retries=3, timeout=60) as client:

        async def user() -> None:
            for i in numbers:
                await client.predict(images[i % len(images)])

        await asyncio.gather(*(user() for _ in range(concurrency)))


def _findings(report: dict[str, Any]) -> str:
    lines = [f"engine limit (decode+preprocess+inference, best batch): {report['engine_limit_images_per_s']} img/s"]
    if "proxy_overhead" in report:
        o = report["proxy_overhead"]
        lines.append(
            f"proxy adds {o['median_added_ms']} ms at concurrency 1 (median of {o['pairs']} paired requests: "
            f"{o['direct_p50_ms']} ms straight, {o['proxy_p50_ms']} ms through the proxy)"
        )
    for mode, carried in report.get("proxy_bytes", {}).items():
        lines.append(f"bytes the proxy carried during the {mode} runs: {carried:,.0f}")
    if "soak" in report:
        s = report["soak"]
        lines.append(
            f"worker memory: {s['rss_after_first_mb']} MB after {s['checkpoint']} requests, "
            f"{s['rss_at_end_mb']} MB after {s['requests']} ({s['growth_percent']:+.2f}%)"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _pool(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(proxy URL, worker URL): the pool at --url, or a proxy and one worker started here on loopback."""
    if args.url:
        workers = requests.get(args.url.rstrip("/") + wire.WORKERS, timeout=10).json()["workers"]
        serving = [w["url"] for w in workers if args.model in w["models"]]
        if not serving:
            raise SystemExit(f"visionpool bench: no worker at {args.url} serves {args.model!r}")
        yield args.url.rstrip("/"), serving[0]
        return
    token, ports = secrets.token_urlsafe(16), [_free_port(), _free_port()]
    env = {**os.environ, "VISIONPOOL_REGISTRY_TOKEN": token}
    proxy_url, worker_url = (f"http://127.0.0.1:{port}" for port in ports)
    worker_args = ["--model", args.model, "--port", str(ports[1]), "--registry", "local", "--registry-url", proxy_url]
    if args.model_repository:
        worker_args += ["--model-repository", args.model_repository]
    with tempfile.TemporaryFile() as log:
        processes = [_spawn("proxy", ["--port", str(ports[0])], env, log), _spawn("worker", worker_args, env, log)]
        try:
            _wait(worker_url + wire.READYZ, processes, log)
            _wait(proxy_url + wire.READYZ, processes, log)
            yield proxy_url, worker_url
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(30)


def _spawn(service: str, args: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    full = [sys.executable, "-m", f"visionpool.{service}", *args, "--log-level", "WARNING"]
    return subprocess.Popen(full, env=env, stdout=log, stderr=log)


def _wait(url: str, processes: list[subprocess.Popen[bytes]], log: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            log.seek(0)
            raise SystemExit(f"visionpool bench: the pool failed to start:\n{log.read().decode(errors='replace')}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"visionpool bench: {url} not ready after {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


COMMAND = Command(
    "bench",
    "measure the pool against the engine's own limit",
    "Measure the engine limit, one worker, the proxy and p2p mode.",
    add_arguments,
    run,
)
