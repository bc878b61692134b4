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
pool it starts), bounded in time (and, with the Python clients, in count:
``--load-generator wrk`` is bounded by its duration).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from visionpool.client import wire
from visionpool.serving.commands import command
from visionpool.serving.options import option
from visionpool.tools import overhead
from visionpool.tools.limits import cpu_costs, engine_limit, inference_limit
from visionpool.tools.loadgen import (
    Measurement,
    on_this_machine,
    paired_overhead,
    sample_images,
    table,
    triton_loop,
)
from visionpool.tools.peer import serve_peer
from visionpool.tools.servers import family_clock, free_port, on_cpus, parse_cpus, settle, total
from visionpool.tools.wrk import LOAD_GENERATORS, measure_load
from visionpool.worker.engines import host_cores
from visionpool.worker.pipeline import Pipeline

SOAK_CHECKPOINT = 1_000


@dataclass
class BenchSettings:
    """``visionpool bench``: the model, the pool (started here unless --url), what to measure and how long."""

    url: str | None = option(None, "A running pool's proxy; default: start one on loopback.", no_env=True)
    model: str = option("coco-ssd", "The model to measure.", no_env=True)
    model_repository: str | None = option(
        None, "Where the model is (for the engine limit and the pool started here); default: the built-in repository.",
        metavar="DIR", no_env=True,
    )  # fmt: skip
    engine: str | None = option(None, "Serve the model with this engine (default: its config's).", no_env=True)
    device: str = option("cpu", "Where the model runs: cpu or cuda:N, as the worker's --device.", no_env=True)
    engines: str | None = option(
        None, "Engines to measure the engine limit of, e.g. openvino,onnxruntime (default: --engine).", no_env=True
    )
    workers: int = option(1, "Workers in the pool started here, sharing the cores.", no_env=True)
    front_processes: int = option(
        0, "The workers started here (and the overhead target's) take HTTP in this many front processes each, as "
        "the worker's --front-processes.", no_env=True,
    )  # fmt: skip
    images: list[str] = option(
        default_factory=list, help="Image files or folders (default: generated photos).", nargs="*", no_env=True
    )
    concurrency: str = option("1,4,16,64", "Client counts to measure.", no_env=True)
    batch_sizes: str = option("1,2,4,8,16", "Engine batch sizes tried for the limit.", no_env=True)
    duration: float = option(10.0, "Seconds measured per point.", no_env=True)
    warmup: float = option(2.0, "Seconds of load before measuring.", no_env=True)
    rounds: int = option(
        1, "Measure every served target this many times in turn (the engine limit once, its CPU ceiling after each "
        "round); report the median round.", no_env=True,
    )  # fmt: skip
    load_generator: str = option(
        "python", "Where the load comes from: python (the client's own, every target) or wrk (a C load generator, "
        "apt-get install wrk: worker, proxy, peer and overhead; a few hundredths of a core where Python clients "
        "take a third of a small host's).", choices=LOAD_GENERATORS, no_env=True,
    )  # fmt: skip
    targets: str = option(
        "engine,worker,proxy,p2p",
        "What to measure: engine, worker, proxy, p2p, v2-rest, v2-grpc (the last two with tritonclient), inference "
        "(the engine alone at each batch size: a GPU's own limit), overhead (a worker's CPU per request around a "
        "model that does no work, beside gunicorn + Flask doing the same; 64x64 JPEGs unless --images), peer (the "
        "model's ONNX file in gunicorn + Flask + ONNX Runtime, with the same images and clients).",
        no_env=True,
    )
    soak: int = option(
        0, f"Then send this many requests to the worker and compare its memory after the first {SOAK_CHECKPOINT} "
        "with the end.", no_env=True,
    )  # fmt: skip
    server_cpus: str | None = option(
        None, "Run the servers started here (workers, proxy, the overhead target's, the peer) on these CPUs only, "
        "as taskset's list: 0, 0,1, 0-3 (how their rate grows with the cores).", metavar="LIST", no_env=True,
    )  # fmt: skip
    json: str | None = option(None, "Also write the results to this JSON file.", metavar="FILE", no_env=True)

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.warmup < 0 or self.rounds < 1 or self.workers < 1 or self.soak < 0:
            raise ValueError("duration must be above 0, warmup and soak at least 0, rounds and workers at least 1")
        if self.front_processes < 0:
            raise ValueError("front_processes must be 0 (none) or more")
        if self.cpus is not None and not self.cpus <= os.sched_getaffinity(0):  # a bad list: ValueError too
            raise ValueError(f"server_cpus {self.server_cpus} names CPUs this machine does not give the bench")

    @property
    def cpus(self) -> frozenset[int] | None:
        """The CPUs the servers started here run on (--server-cpus); None: wherever the system puts them."""
        return parse_cpus(self.server_cpus)


def run(args: BenchSettings) -> int:
    targets = set(args.targets.split(","))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    images = sample_images(args.images)
    report: dict[str, Any] = {"model": args.model, "images": len(images), "duration_s": args.duration, "cpu": cpu()}
    print(f"CPU: {report['cpu']['model']}, {host_cores()} cores; {', '.join(report['cpu']['flags']) or 'no bf16/AMX'}")
    if "overhead" in targets:
        small = sample_images(args.images) if args.images else [overhead.small_jpeg()]
        report["overhead"] = [
            overhead.measure(small, concurrency, args.duration, args.warmup, args.front_processes, args.load_generator,
                             args.cpus, args.rounds)  # fmt: skip
            for concurrency in concurrencies
        ]
        for rows in report["overhead"]:
            print(overhead.table(rows))
        targets.discard("overhead")
        if not targets:
            _write(args, report)
            return 0
    limits = _engines(args, images, targets) if targets & {"engine", "inference"} else {}
    served = _served_engine(args) if limits else None
    limit = max((m.rate for m in limits.get(served or "", ([], {}))[0] if m.target == "engine"), default=0.0)
    report["engine_limit_images_per_s"] = round(limit, 1)
    report["engines"] = {name: _ceiling(measured) for name, measured in limits.items()}
    rows = [{**m.row(limit), "engine": name} for name, (measured, _) in limits.items() for m in measured]
    with _pool(args) as (proxy, worker), _peer(args, report, "peer" in targets) as peer:
        report["proxy"], report["worker"] = proxy, worker
        clocks = _clocks({"worker": _worker_urls(proxy, args.model), "proxy": [proxy]})
        started_here = [*(clocks.values() if args.url is None else []), *([peer[1]] if peer else [])]  # the pool, peer
        at_rest = functools.partial(settle, started_here)  # before each point: their last requests answered
        measured: list[dict[str, Any]] = []
        ceiling = report["engines"].get(served or "", {})
        around = [ceiling["cpu_ms_per_image"]] if "worker" in targets and ceiling else []  # the CPU ceiling's costs
        for _ in range(args.rounds):  # in turn, so that a host's drift falls on every target alike
            for target, url, mode in (("worker", worker, "proxy"), ("proxy", proxy, "proxy"), ("p2p", proxy, "p2p")):
                if target in targets:
                    watched = {k: clock for k, clock in clocks.items() if k == "worker" or target != "worker"}
                    rows_now = _series(target, url, mode, args, images, concurrencies, limit, report, watched,
                                       at_rest)  # fmt: skip
                    if target == "worker" and around:  # measured again after it: the ceiling around these rows
                        at_rest()
                        around.append(_costs_again(args, images, served or "", ceiling["inference_batch"]))
                        for row in rows_now:
                            row["cpu_ceiling_images_per_s"] = round(host_cores() * 2000 / sum(around[-2:]), 1)
                    measured += rows_now
            if peer is not None:  # in the same rounds as the worker, so that the host's drift falls on both alike
                measured += _peer_series(args, peer, images, concurrencies, limit, at_rest)
            for target in ("v2-rest", "v2-grpc"):
                if target in targets:
                    measured += _v2_series(target, proxy, worker, args, images, concurrencies, limit, clocks, at_rest)
        if around:
            report["ceiling_cpu_ms_around_worker"] = around
        rows += _medians(measured)
        if {"worker", "proxy"} <= targets:
            report["proxy_overhead"] = asyncio.run(
                paired_overhead(worker, proxy, args.model, images, max(args.duration, 5.0))
            )
        if args.soak:
            report["soak"] = _soak(worker, args.model, images, args.soak)
    report["rows"] = rows
    report["served_engine"] = served
    print(table(rows))
    print(_findings(report))
    _write(args, report)
    return 0


def _write(args: BenchSettings, report: dict[str, Any]) -> None:
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=2)



CPU_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512f", "avx2")  # what decides OpenVINO's speed and precision


def cpu() -> dict[str, Any]:
    """This machine's CPU model and the flags that matter to inference, as /proc/cpuinfo says."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return {"model": "unknown", "flags": []}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = next((v.strip() for k, v in fields.items() if k.strip() == "model name"), "unknown")
    flags = set(next((v.split() for k, v in fields.items() if k.strip() == "flags"), []))
    return {"model": model, "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def _served_engine(args: BenchSettings) -> str:
    """The engine the pool serves the model with: --engine, else its config's on --device."""
    from visionpool.worker.repository import BUILTIN_REPOSITORY, ModelRepository
    from visionpool.worker.settings import WorkerSettings

    configured = ModelRepository(Path(args.model_repository or BUILTIN_REPOSITORY)).load(args.model).engine
    return WorkerSettings(engine=args.engine, device=args.device).engine_for(configured)


Limits = dict[str, tuple[list[Measurement], dict[str, float]]]


def _engines(args: BenchSettings, images: list[bytes], targets: set[str]) -> Limits:
    """The engine limit with each engine asked for, the model loaded and warmed up exactly as a worker does it."""
    names = (args.engines or _served_engine(args)).split(",")
    return {name: _engine(args, images, name, "inference" in targets) for name in names}


@contextlib.contextmanager
def _loaded(args: BenchSettings, engine: str) -> Iterator[Pipeline]:
    """The model on ``engine`` in this process, loaded and warmed up exactly as a worker does it."""
    from visionpool.worker.metrics import WorkerMetrics
    from visionpool.worker.models import ModelManager
    from visionpool.worker.settings import WorkerSettings

    settings = WorkerSettings(models=[args.model], max_image_pixels=10**9, engine=engine, device=args.device)
    if args.model_repository:
        settings.model_repository = Path(args.model_repository)
    models = ModelManager(settings, WorkerMetrics(dict))
    models.load_all()
    if models.failure is not None:
        raise models.failure
    try:
        yield models.get(args.model)
    finally:
        models.close()


def _engine(
    args: BenchSettings, images: list[bytes], engine: str, inference: bool
) -> tuple[list[Measurement], dict[str, float]]:
    with _loaded(args, engine) as pipeline:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        batch_sizes = sizes if pipeline.config.batching.max_batch_size > 1 else [1]
        measured = engine_limit(pipeline, images, batch_sizes, args.duration / 2)
        runs = [size for size in batch_sizes if size <= pipeline.batcher.max_batch] or [1]  # what the worker runs
        costs = cpu_costs(pipeline, images, runs, _costs_seconds(args))
        if inference:
            measured += inference_limit(pipeline, images, batch_sizes, args.duration / 2)
        return measured, costs


def _costs_again(args: BenchSettings, images: list[bytes], engine: str, batch: int) -> float:
    """The CPU-ms per image of the CPU ceiling, measured again (after a round of the worker's series): this host's
    speed drifts by a fifth between minutes, so each round's share of the ceiling is against the ceiling around it."""
    with _loaded(args, engine) as pipeline:
        return cpu_costs(pipeline, images, [batch], _costs_seconds(args))["cpu_ms_per_image"]


def _costs_seconds(args: BenchSettings) -> float:
    return min(3.0, args.duration)


def _ceiling(measured: tuple[list[Measurement], dict[str, float]]) -> dict[str, Any]:
    """The engine's best point, its CPU ceiling, and the engine alone at its best batch (when measured)."""
    rows, costs = measured
    best = max((m for m in rows if m.target == "engine"), key=lambda m: m.rate)
    ceiling = {"limit_images_per_s": round(best.rate, 1), "best_batch": best.concurrency, **costs}
    alone = [m for m in rows if m.target == "inference"]
    if alone:
        top = max(alone, key=lambda m: m.rate)
        ceiling |= {"inference_limit_images_per_s": round(top.rate, 1), "inference_best_batch": top.concurrency}
        gain = round(top.rate / alone[0].rate, 2) if alone[0].rate else None
        ceiling |= {"batching_gain": gain, "batching_gain_over_batch": alone[0].concurrency}
    return ceiling


def _series(
    target: str,
    url: str,
    mode: str,
    args: BenchSettings,
    images: list[bytes],
    concurrencies: list[int],
    limit: float,
    report: dict[str, Any],
    clocks: dict[str, Callable[[], float]],
    at_rest: Callable[[], None],
) -> list[dict[str, Any]]:
    """One target at every concurrency (with the CPU its servers used); the bytes the proxy carried meanwhile."""
    rows = []
    carried = _proxy_bytes(report["proxy"])
    for concurrency in concurrencies:
        at_rest()
        m = measure_load(args.load_generator, target, url, mode, args.model, images, concurrency, args.duration,
                         args.warmup, clocks)  # fmt: skip
        rows.append(m.row(limit))
    if target != "worker" and carried is not None:
        after = _proxy_bytes(report["proxy"])
        report.setdefault("proxy_bytes", {})[target] = after - carried if after is not None else None
    return rows


Peer = tuple[str, Callable[[], float]]  # the peer's url and CPU clock


@contextlib.contextmanager
def _peer(args: BenchSettings, report: dict[str, Any], wanted: bool) -> Iterator[Peer | None]:
    """The model in gunicorn + Flask + ONNX Runtime (tools/peer.py), up through every round: (url, its CPU clock);
    None when not asked for or when it cannot run."""
    if not wanted:
        yield None
        return
    from visionpool.worker.repository import BUILTIN_REPOSITORY, ModelRepository

    config = ModelRepository(Path(args.model_repository or BUILTIN_REPOSITORY)).load(args.model)
    with serve_peer(config, args.cpus) as (url, clock, versions):
        report["peer"] = {"versions": versions} if url else {"not_measured": versions}
        print(f"peer: gunicorn + Flask + ONNX Runtime ({versions})" if url else f"peer not measured: {versions}")
        yield (url, clock) if url else None


def _peer_series(
    args: BenchSettings,
    peer: Peer,
    images: list[bytes],
    concurrencies: list[int],
    limit: float,
    at_rest: Callable[[], None],
) -> list[dict[str, Any]]:
    """The peer at every concurrency, once."""
    url, clock = peer
    rows = []
    for concurrency in concurrencies:
        at_rest()
        m = measure_load(args.load_generator, "peer", url, "proxy", None, images, concurrency, args.duration,
                         args.warmup, {"worker": clock})  # fmt: skip
        rows.append(m.row(limit))
    return rows


def _medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (target, concurrency), the round whose throughput is the median (the first round's order)."""
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        points.setdefault((row["target"], row["concurrency"]), []).append(row)
    chosen = []
    for rounds in points.values():
        ranked = sorted(rounds, key=lambda r: r["images_per_s"])
        chosen.append({**ranked[len(ranked) // 2], "rounds": len(ranked)})
    return chosen


def _v2_series(
    target: str,
    proxy: str,
    worker: str,
    args: BenchSettings,
    images: list[bytes],
    concurrencies: list[int],
    limit: float,
    clocks: dict[str, Callable[[], float]],
    at_rest: Callable[[], None],
) -> list[dict[str, Any]]:
    """The Open Inference Protocol straight to the worker, with Triton's own client: REST, or gRPC."""
    listed = requests.get(proxy + wire.WORKERS, timeout=10).json()["workers"]
    if target == "v2-grpc":
        address = next((w.get("grpc") for w in listed if w["url"] == worker), "")
        if not address:
            raise ValueError(f"the worker at {worker} serves no gRPC (start it with --grpc-port)")
    else:
        address = worker.removeprefix("http://").removeprefix("https://")
    protocol = "grpc" if target == "v2-grpc" else "rest"
    watched = {name: clock for name, clock in clocks.items() if name == "worker"}
    rows = []
    for concurrency in concurrencies:
        at_rest()
        load = triton_loop(
            target, address, protocol, args.model, images, concurrency, args.duration, args.warmup, watched
        )
        rows.append(asyncio.run(load).row(limit))
    return rows


def _worker_urls(proxy: str, model: str) -> list[str]:
    """Every worker the proxy lists for ``model``."""
    workers = requests.get(proxy + wire.WORKERS, timeout=10).json()["workers"]
    return [w["url"] for w in workers if model in w["models"]]


def _clocks(servers: dict[str, list[str]]) -> dict[str, Callable[[], float]]:
    """CPU readers by role, each the sum of that role's processes on this machine (pids from /healthz)."""
    clocks = {}
    for name, urls in servers.items():
        readers = []
        for url in urls:
            if not on_this_machine(url):
                continue
            with contextlib.suppress(requests.RequestException, KeyError, ValueError, OSError):
                reader = family_clock(int(requests.get(url + wire.HEALTHZ, timeout=5).json()["pid"]))  # and fronts
                reader()  # readable: the process is really here
                readers.append(reader)
        if readers:
            clocks[name] = total(readers)
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
    limit, served = report["engine_limit_images_per_s"], report["served_engine"]
    lines = [f"engine limit of {served} (its pipeline, best batch): {limit} img/s"] if served else []
    for name, engine in report.get("engines", {}).items():
        lines.append(
            f"{name}: limit {engine['limit_images_per_s']} img/s at batch {engine['best_batch']}; CPU-ms per image: "
            f"decode+preprocess {engine['decode_preprocess_cpu_ms']}, inference {engine['inference_cpu_ms']} (batch "
            f"{engine['inference_batch']}), postprocess {engine['postprocess_cpu_ms']}; CPU ceiling "
            f"{engine['cpu_ceiling_images_per_s']} img/s ({host_cores()} cores / {engine['cpu_ms_per_image']} ms)"
        )
        if "inference_limit_images_per_s" in engine:
            decode = host_cores() * 1000 / engine["decode_preprocess_cpu_ms"]
            limited = "decoding" if decode < engine["inference_limit_images_per_s"] else "the engine"
            lines.append(
                f"{name} alone: {engine['inference_limit_images_per_s']} img/s at batch "
                f"{engine['inference_best_batch']} ({engine['batching_gain']}x its rate at batch "
                f"{engine['batching_gain_over_batch']}); decoding on {host_cores()} cores feeds {decode:.0f} img/s: "
                f"{limited} is the limit"
            )
    ceiling = report.get("engines", {}).get(report["served_engine"], {})
    for row in report["rows"]:
        if row["target"] == "worker" and ceiling.get("cpu_ceiling_images_per_s") and row.get("worker_cpu_ms"):
            top = row.get("cpu_ceiling_images_per_s", ceiling["cpu_ceiling_images_per_s"])
            which = "the CPU ceiling" + (" measured before and after it" if "cpu_ceiling_images_per_s" in row else "")
            lines.append(
                f"worker at {row['concurrency']}: {row['images_per_s']} img/s = {row['images_per_s'] / top:.0%} of "
                f"{which} ({top} img/s), {row['worker_cores']} cores busy, "
                f"{row['worker_cpu_ms'] - host_cores() * 1000 / top:+.2f} CPU-ms per image beyond the pipeline's own"
            )
    peers = {row["concurrency"]: row for row in report["rows"] if row["target"] == "peer" and row["images_per_s"]}
    for row in report["rows"]:
        if row["target"] == "worker" and row["concurrency"] in peers:
            ratio = row["images_per_s"] / peers[row["concurrency"]]["images_per_s"]
            lines.append(f"worker at {row['concurrency']}: {ratio:.2f}x the img/s of gunicorn + Flask + ONNX Runtime")
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
def _pool(args: BenchSettings) -> Iterator[tuple[str, str]]:
    """(proxy URL, first worker URL): the pool at --url, or a proxy and --workers workers started here on loopback."""
    if args.url:
        workers = requests.get(args.url.rstrip("/") + wire.WORKERS, timeout=10).json()["workers"]
        serving = [w["url"] for w in workers if args.model in w["models"]]
        if not serving:
            raise SystemExit(f"visionpool bench: no worker at {args.url} serves {args.model!r}")
        yield args.url.rstrip("/"), serving[0]
        return
    token, ports = secrets.token_urlsafe(16), [free_port() for _ in range(args.workers + 1)]
    grpc_ports = [free_port() for _ in range(args.workers)]
    env = {**os.environ, "VISIONPOOL_REGISTRY_TOKEN": token}
    proxy_url, *worker_urls = (f"http://127.0.0.1:{port}" for port in ports)
    worker_args = ["--model", args.model, "--registry", "local", "--registry-url", proxy_url]
    worker_args += ["--workers-per-host", str(args.workers)]
    if args.model_repository:
        worker_args += ["--model-repository", args.model_repository]
    if args.engine:
        worker_args += ["--engine", args.engine]
    worker_args += ["--device", args.device, "--front-processes", str(args.front_processes)]
    with tempfile.TemporaryFile() as log:
        processes = [_spawn("proxy", ["--port", str(ports[0])], env, log, args.cpus)]
        processes += [
            _spawn("worker", [*worker_args, "--port", str(port), "--grpc-port", str(grpc)], env, log, args.cpus)
            for port, grpc in zip(ports[1:], grpc_ports, strict=True)
        ]
        try:
            for url in worker_urls:
                _wait(url + wire.READYZ, processes, log)
            _wait_for_workers(proxy_url, args.workers, processes, log)
            yield proxy_url, worker_urls[0]
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(30)


def _wait_for_workers(proxy: str, count: int, processes: list[subprocess.Popen[bytes]], log: Any) -> None:
    """Until the proxy has every worker in its rotation."""
    _wait(proxy + wire.READYZ, processes, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(requests.get(proxy + wire.WORKERS, timeout=5).json()["workers"]) >= count:
            return
        time.sleep(0.1)
    raise SystemExit(f"visionpool bench: the proxy did not see {count} workers in 30 s")


def _spawn(
    service: str, args: list[str], env: dict[str, str], log: Any, cpus: frozenset[int] | None
) -> subprocess.Popen[bytes]:
    full = [sys.executable, "-m", f"visionpool.{service}", *args, "--log-level", "WARNING"]
    return subprocess.Popen(full, env=env, stdout=log, stderr=log, preexec_fn=on_cpus(cpus))


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


COMMAND = command(
    "bench",
    "measure the pool against the engine's own limit",
    "Measure the engine limit, one worker, the proxy and p2p mode.",
    BenchSettings,
    run,
)
