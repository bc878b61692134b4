"""Measuring speed: the engine's own limit, and closed-loop load on a served URL.

Usage:
    limit = engine_limit(config, images, batch_sizes=(1, 4, 8), seconds=5)
    stats = closed_loop("http://127.0.0.1:8000/predict", images, concurrency=16, seconds=10)

Load goes only to the URL given, for a bounded time and a bounded number of requests.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

MAX_REQUESTS = 1_000_000  # a hard cap on any one run, whatever its duration


@dataclass
class Result:
    """What one measurement saw."""

    label: str
    images: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Images per second."""
        return self.images / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return 0.0
        return float(np.percentile(self.latencies, q) * 1000.0)

    def row(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "images_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile(50), 1),
            "p90_ms": round(self.percentile(90), 1),
            "p99_ms": round(self.percentile(99), 1),
            "errors": self.errors,
        }


def engine_limit(
    config: Any, images: Sequence[bytes], batch_sizes: Sequence[int], seconds: float, *, decode: bool = True
) -> list[Result]:
    """The model alone, in this process: decode + preprocess + inference, one batch after another."""
    from visionpool.worker.engines import create_engine
    from visionpool.worker.imaging import decode_image
    from visionpool.worker.preprocess import preprocess

    engine = create_engine(config.engine, config.files, config.input.name, config.engine_options)
    size = (config.input.width, config.input.height)
    prepared = [preprocess(decode_image(i, max_pixels=10**9, min_size=size).pixels, config.input)[0] for i in images]
    results = []
    for batch_size in batch_sizes:
        engine.run(np.stack(prepared[:1] * batch_size))  # warm-up at this shape
        result = Result(f"engine batch {batch_size}" + (" (decode+preprocess+inference)" if decode else ""))
        source = itertools.cycle(images if decode else prepared)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            t0 = time.monotonic()
            if decode:
                batch = [
                    preprocess(decode_image(next(source), max_pixels=10**9, min_size=size).pixels, config.input)[0]  # type: ignore[arg-type]
                    for _ in range(batch_size)
                ]
            else:
                batch = [next(source) for _ in range(batch_size)]  # type: ignore[misc]
            engine.run(np.stack(batch))
            result.latencies.append(time.monotonic() - t0)
            result.images += batch_size
        result.seconds = time.monotonic() - started
        results.append(result)
    engine.close()
    return results


def closed_loop(
    url: str, images: Sequence[bytes], concurrency: int, seconds: float, *, warmup: float = 1.0, label: str = ""
) -> Result:
    """``concurrency`` clients posting images back to back for ``seconds`` (after ``warmup``)."""
    result = Result(label or f"c={concurrency}")
    lock = threading.Lock()
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    counter = itertools.count()

    def client(offset: int) -> None:
        with requests.Session() as session:
            for i in itertools.count(offset):
                now = time.monotonic()
                if now >= stop_at or next(counter) >= MAX_REQUESTS:
                    return
                ok = _post(session, url, images[i % len(images)])
                done = time.monotonic()
                if now >= measure_from:
                    with lock:
                        result.latencies.append(done - now)
                        result.images += ok
                        result.errors += not ok

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + warmup + 60)
    result.seconds = stop_at - measure_from
    return result


def _post(session: requests.Session, url: str, image: bytes) -> bool:
    try:
        response = session.post(url, data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)
    except requests.RequestException:
        return False
    return response.status_code == 200


def summary(results: Sequence[Result]) -> str:
    """A readable table."""
    lines = [f"{'measurement':<48} {'img/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}"]
    for r in results:
        lines.append(
            f"{r.label:<48} {r.rate:>8.1f} {r.percentile(50):>8.1f} {r.percentile(90):>8.1f} "
            f"{r.percentile(99):>8.1f} {r.errors:>7}"
        )
    return "\n".join(lines)


def median_rate(results: Sequence[Result]) -> float:
    return statistics.median(r.rate for r in results) if results else 0.0
