"""Load generation for ``visionpool bench``: closed-loop clients, paired requests, the results table.

Usage:
    m = asyncio.run(closed_loop("proxy", url, "proxy", model, images, concurrency=16, seconds=10, warmup=2))
    print(table([m.row(limit)]))

Load goes only to the URLs given, bounded in time and in count (MAX_REQUESTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from visionpool.client.aio import AsyncClient

MAX_REQUESTS = 1_000_000  # a hard cap on any one measurement, whatever its duration


@dataclass
class Measurement:
    """What one measurement saw."""

    target: str  # engine, worker, proxy or p2p
    concurrency: int  # for the engine: the batch size
    images: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds each server process spent while measured
    latency_ms: dict[float, float] = field(default_factory=dict)  # percentiles the load generator gave (wrk)

    @property
    def rate(self) -> float:
        """Images per second."""
        return self.images / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile, in milliseconds."""
        if q in self.latency_ms:
            return self.latency_ms[q]
        return float(np.percentile(self.latencies, q) * 1000.0) if self.latencies else 0.0

    def row(self, limit: float) -> dict[str, Any]:
        """The JSON row; ``limit`` is the engine's best rate, for the fraction."""
        cpu = {}
        for name, seconds in self.cpu.items():  # how busy each server was, and its cost per image
            cpu[f"{name}_cores"] = round(seconds / self.seconds, 2) if self.seconds else None
            cpu[f"{name}_cpu_ms"] = round(seconds * 1000 / self.images, 2) if self.images else None
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "images_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile(50), 1),
            "p90_ms": round(self.percentile(90), 1),
            "p99_ms": round(self.percentile(99), 1),
            "errors": self.errors,
            "fraction_of_engine_limit": round(self.rate / limit, 3) if limit else None,
            **{f"{name}_cores": round(seconds / self.seconds, 2) for name, seconds in self.cpu.items() if self.seconds},
            **{
                f"{name}_cpu_ms": round(seconds * 1000 / self.images, 2)
                for name, seconds in self.cpu.items()
                if self.images
            },
        }


def on_this_machine(url: str) -> bool:
    """Whether ``url``'s host is this machine: loopback, or an address a socket here can bind."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    for address in addresses:
        if ipaddress.ip_address(address.split("%")[0]).is_loopback:
            continue
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                return False
    return True


def cpu_clock(pid: int) -> Callable[[], float]:
    """A reader of the CPU seconds (user + system) process ``pid`` has used, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime and stime, fields 14 and 15

    return read


def sample_images(paths: Sequence[str] = ()) -> list[bytes]:
    """The images to send: the files given (folders searched), or four generated 640x480 JPEG scenes."""
    from visionpool.client.batch import collect

    files = [path for path, _ in collect(paths, io.StringIO())]
    if files:
        return [Path(f).read_bytes() for f in files[:64]]
    return [_scene(seed) for seed in range(4)]


def _scene(seed: int) -> bytes:
    """A 640x480 photo-like JPEG: gradients, shapes and some texture (not noise, which no camera makes)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], axis=2) * rng.uniform(0.4, 1.0, 3)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, 560), rng.integers(0, 400)
        box = (int(x0), int(y0), int(x0 + rng.integers(30, 200)), int(y0 + rng.integers(30, 200)))
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    texture = Image.fromarray(rng.integers(0, 40, (480, 640, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(1))
    buffer = io.BytesIO()
    Image.blend(image, texture, 0.15).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


Sender = Callable[[bytes], Awaitable[Any]]  # sends one image; raises on failure


async def closed_loop(
    target: str,
    url: str,
    mode: str,
    model: str | None,
    images: Sequence[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    clocks: dict[str, Callable[[], float]] | None = None,
    protocol: str = "predict",
    api_key: str | None = None,
) -> Measurement:
    """``concurrency`` clients, each with its own AsyncClient, posting back to back; measured after ``warmup``.

    ``clocks`` (a name -> CPU-seconds reader, see cpu_clock) are read when the measurement starts and ends.
    """

    @contextlib.asynccontextmanager
    async def sender() -> AsyncIterator[Sender]:
        async with AsyncClient(
            url, mode=mode, model=model, retries=0, timeout=60, protocol=protocol, api_key=api_key
        ) as client:
            yield client.predict

    return await _loop(Measurement(target, concurrency), sender, images, seconds, warmup, clocks)


async def triton_loop(
    target: str,
    address: str,
    protocol: str,
    model: str,
    images: Sequence[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    clocks: dict[str, Callable[[], float]] | None = None,
) -> Measurement:
    """The same closed loop with Triton's own asyncio client (``tritonclient[http,grpc]``), over REST or gRPC."""
    if protocol == "grpc":
        import tritonclient.grpc.aio as triton
    else:
        try:
            import tritonclient.http.aio as triton  # type: ignore[no-redef]
        except ImportError as error:
            raise ValueError(f"measuring v2 over REST needs tritonclient[http] ({error})") from None

    @contextlib.asynccontextmanager
    async def sender() -> AsyncIterator[Sender]:
        client = triton.InferenceServerClient(address)

        async def send(image: bytes) -> Any:
            tensor = triton.InferInput("IMAGE", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
            return await client.infer(model, [tensor])

        try:
            yield send
        finally:
            await client.close()

    return await _loop(Measurement(target, concurrency), sender, images, seconds, warmup, clocks)


async def _loop(
    result: Measurement,
    sender: Callable[[], contextlib.AbstractAsyncContextManager[Sender]],
    images: Sequence[bytes],
    seconds: float,
    warmup: float,
    clocks: dict[str, Callable[[], float]] | None,
) -> Measurement:
    """Each of ``result.concurrency`` users sends image after image; what it measured after ``warmup``."""
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    budget = itertools.count()

    async def watch_cpu() -> None:
        await asyncio.sleep(max(measure_from - time.monotonic(), 0))
        started = {name: read() for name, read in (clocks or {}).items()}
        await asyncio.sleep(max(stop_at - time.monotonic(), 0))
        result.cpu = {name: read() - started[name] for name, read in (clocks or {}).items()}

    async def user(offset: int) -> None:
        async with sender() as send:
            for i in itertools.count(offset):
                began = time.monotonic()
                if began >= stop_at or next(budget) >= MAX_REQUESTS:
                    return
                try:
                    await send(images[i % len(images)])
                    ok = True
                except Exception:  # noqa: BLE001 - any failure of one request is counted, never fatal
                    ok = False
                if began >= measure_from:
                    result.latencies.append(time.monotonic() - began)
                    result.images += ok
                    result.errors += not ok

    await asyncio.gather(watch_cpu(), *(user(i) for i in range(result.concurrency)))
    result.seconds = stop_at - measure_from
    return result


async def paired_overhead(
    worker: str, proxy: str, model: str | None, images: Sequence[bytes], seconds: float
) -> dict[str, float]:
    """The proxy's added latency at concurrency 1, from requests sent alternately straight and through it.

    Back-to-back pairs (in A-B-B-A order, to cancel drift) see the same machine load, so the
    median of their differences is far steadier than two separate runs' p50s.
    """
    direct_times: list[float] = []
    proxied_times: list[float] = []
    async with (
        AsyncClient(worker, mode="proxy", model=model, retries=0) as direct,
        AsyncClient(proxy, mode="proxy", model=model, retries=0) as proxied,
    ):
        stop_at = time.monotonic() + seconds
        for i in itertools.count():
            if time.monotonic() >= stop_at or i >= MAX_REQUESTS:
                break
            image = images[i % len(images)]
            order = ((direct, direct_times), (proxied, proxied_times))
            for client, times in order if i % 2 == 0 else order[::-1]:
                began = time.monotonic()
                await client.predict(image)
                times.append(time.monotonic() - began)
    differences = [p - d for p, d in zip(proxied_times, direct_times, strict=True)]
    return {
        "pairs": len(differences),
        "direct_p50_ms": round(float(np.median(direct_times)) * 1000, 2),
        "proxy_p50_ms": round(float(np.median(proxied_times)) * 1000, 2),
        "median_added_ms": round(float(np.median(differences)) * 1000, 2),
    }


# "srv": the processes that run the model (every worker on this machine; for engine rows the bench itself);
# "prx": the proxy
CPU_COLUMNS = (("worker_cores", "srv cores"), ("worker_cpu_ms", "srv CPU-ms"), ("proxy_cpu_ms", "prx CPU-ms"))


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a readable table (with the servers' CPU columns when they were measured)."""
    cpu = [(key, name) for key, name in CPU_COLUMNS if any(key in r for r in rows)]
    names = ("target", "conc.", "img/s", "p50 ms", "p90 ms", "p99 ms", "errors", "of limit", *(n for _, n in cpu))
    width = max([8, *(len(r["target"]) + len(r.get("engine") or "") + 1 for r in rows)])
    header = " ".join(
        f"{n:<{width}}" if i == 0 else f"{n:>{max(len(n), 5 if n == 'conc.' else 8)}}" for i, n in enumerate(names)
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        fraction = f"{r['fraction_of_engine_limit']:.0%}" if r["fraction_of_engine_limit"] is not None else "-"
        extra = "".join(f" {_cell(r.get(key)):>{max(len(name), 8)}}" for key, name in cpu)
        target = f"{r['target']}/{r['engine']}" if r.get("engine") else r["target"]
        lines.append(
            f"{target:<{width}} {r['concurrency']:>5} {r['images_per_s']:>8.1f} {r['p50_ms']:>8.1f} "
            f"{r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>8} {fraction:>8}{extra}"
        )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
