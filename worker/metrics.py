"""What a worker tells Prometheus (GET /metrics) and its log: one record per request.

Usage:
    metrics = WorkerMetrics(get_models)              # one registry per app
    with metrics.track(model_name, request_id) as request:
        ...                                          # request.stages = {...}; errors are counted too
    metrics.recent.read()                            # images/s, requests/s, p50/p99 over the last minute

Histograms, not summaries, so they aggregate across workers. Names follow
Prometheus conventions: ``visionpool_worker_*``, base units, ``_total`` counters.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.samples import Sample
from werkzeug.exceptions import HTTPException

from visionpool.serving.options import log_fields

from .errors import ServiceError, http_error_code

logger = logging.getLogger("visionpool.worker.requests")

# Fine enough that p50 and p99 read back from them (see Recent) land within a few per cent.
LATENCY_BUCKETS = (
    *(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075),
    *(0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
METRICS = "visionpool.metrics"  # the app.extensions key


@dataclass
class Tracked:
    """One request as it is measured: filled in by the handler, recorded on exit."""

    model: str
    request_id: str
    stages: dict[str, float] = field(default_factory=dict)  # seconds
    batch_size: int = 0
    status: int = 200
    outcome: str = "ok"


class QueueCollector:
    """Queue depth per model, read at scrape time."""

    def __init__(self, queues: Callable[[], dict[str, int]]) -> None:
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("visionpool_worker_queue_depth", "Images waiting for the engine.", labels=["model"])
        for model, depth in self.queues().items():
            family.add_metric([model], depth)
        yield family


class WorkerMetrics:
    """The worker's metrics in a registry of its own."""

    def __init__(self, queues: Callable[[], dict[str, int]]) -> None:
        disable_created_metrics()  # *_created series only double every counter's size
        self.started = time.monotonic()
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_resident_memory_bytes and friends
        registry.register(QueueCollector(queues))
        self.requests = Counter(
            "visionpool_worker_requests",
            "Requests answered, by model, HTTP status and outcome.",
            ["model", "status", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "visionpool_worker_request_duration_seconds",
            "Time from request to answer.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage = Histogram(
            "visionpool_worker_stage_duration_seconds",
            "Time spent in each stage of a request.",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch = Histogram(
            "visionpool_worker_batch_size",
            "Images per engine call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "visionpool_worker_requests_in_flight", "Predict requests being handled.", registry=registry
        )
        self.load = Gauge("visionpool_worker_model_load_seconds", "Time to load a model.", ["model"], registry=registry)
        self.warmup = Gauge(
            "visionpool_worker_model_warmup_seconds",
            "Time of a model's warm-up inference.",
            ["model"],
            registry=registry,
        )
        self.model = Info(
            "visionpool_worker_model",
            "Each served model: its version and where and how it runs (engine, device, precision).",
            ["model"],
            registry=registry,
        )
        self.recent = Recent(self)
        self._children: dict[tuple[str, ...], Any] = {}  # (metric, labels...) -> its labelled child

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: prometheus-client validates and locks on every call."""
        key = (metric._name, *labels)  # noqa: SLF001 - the metric's own name tells the families apart
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def in_flight_now(self) -> int:
        """Predict requests being handled at this moment."""
        return int(_samples(self.in_flight)[0].value)

    @contextlib.contextmanager
    def track(self, model: str, request_id: str) -> Iterator[Tracked]:
        """Count and time one predict request, whatever its outcome; log one line for it."""
        self.in_flight.inc()
        try:
            with tracking(model, request_id, self.record) as request:
                yield request
        finally:
            self.in_flight.dec()

    def record(self, request: Tracked, total: float) -> None:
        """Count, time and log one predict request that took ``total`` seconds (track() calls it; so do the
        front processes' requests, reported to this process: worker/fronts.py)."""
        self.child(self.requests, request.model, str(request.status), request.outcome).inc()
        self.child(self.latency, request.model).observe(total)
        for stage, seconds in request.stages.items():
            self.child(self.stage, request.model, stage).observe(seconds)
        if not logger.isEnabledFor(logging.INFO):  # --log-level WARNING: no line, and none built
            return
        fields: dict[str, Any] = {
            "request_id": request.request_id,
            "model": request.model,
            "status": request.status,
            "outcome": request.outcome,
            "total_ms": round(total * 1000, 2),
            "batch_size": request.batch_size,
            **{f"{stage}_ms": round(seconds * 1000, 2) for stage, seconds in request.stages.items()},
        }
        log_fields(logger, fields)


@contextlib.contextmanager
def tracking(model: str, request_id: str, record: Callable[[Tracked, float], None]) -> Iterator[Tracked]:
    """One predict request measured: its status and outcome from what it raises, then ``record(it, seconds)``."""
    request = Tracked(model, request_id)
    started = time.monotonic()
    try:
        yield request
    except ServiceError as error:
        request.status, request.outcome = error.status, error.code
        raise
    except HTTPException as error:  # werkzeug's own: a body over the limit, a malformed form
        request.status, request.outcome = http_error_code(error)
        raise
    except BaseException:  # a request cancelled at shutdown too: never counted as answered
        request.status, request.outcome = 500, "internal"
        raise
    finally:
        record(request, time.monotonic() - started)


@dataclass(frozen=True)
class Totals:
    """The counters the recent numbers come from, read at one moment."""

    at: float  # time.monotonic()
    requests: float
    images: float
    buckets: tuple[float, ...]  # requests answered within each LATENCY_BUCKETS bound (cumulative), then all of them


class Recent:
    """Images/s, requests/s and latency quantiles over about the last minute, at no cost per request.

    Each read takes the totals the metrics already keep and compares them with the newest totals it
    kept that are at least WINDOW seconds old (or the start, in a worker's first minute; or an older
    read, when nobody asked for a while: ``window_s`` says which). Quantiles are read from the latency
    histogram's buckets as Prometheus' histogram_quantile reads them.
    """

    WINDOW = 60.0
    KEEP_EVERY = 1.0  # seconds between kept totals: a bounded history, however often it is read

    def __init__(self, metrics: WorkerMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics, self.clock = metrics, clock
        self._kept: deque[Totals] = deque([Totals(clock(), 0.0, 0.0, (0.0,) * (len(LATENCY_BUCKETS) + 1))])
        self._lock = threading.Lock()

    def start_over(self) -> None:
        """Count from now on: when the models are ready, so their warm-up images are no one's traffic."""
        now = self.totals()
        with self._lock:
            self._kept = deque([now])

    def read(self) -> dict[str, Any]:
        now = self.totals()
        with self._lock:
            if now.at - self._kept[-1].at >= self.KEEP_EVERY:
                self._kept.append(now)
            while len(self._kept) > 1 and self._kept[1].at <= now.at - self.WINDOW:
                self._kept.popleft()
            then = self._kept[0]
        seconds = max(now.at - then.at, 1e-9)
        answered = [a - b for a, b in zip(now.buckets, then.buckets, strict=True)]
        return {
            "window_s": round(seconds, 1),
            "requests_per_s": round((now.requests - then.requests) / seconds, 2),
            "images_per_s": round((now.images - then.images) / seconds, 2),
            "latency_ms": {
                name: _ms(quantile(q, LATENCY_BUCKETS, answered)) for name, q in (("p50", 0.5), ("p99", 0.99))
            },
        }

    def totals(self) -> Totals:
        """Requests answered (and how fast) and images run, summed over every model, now."""
        buckets = [0.0] * (len(LATENCY_BUCKETS) + 1)
        requests = images = 0.0
        for sample in _samples(self.metrics.latency):
            if sample.name.endswith("_bucket"):
                buckets[bisect.bisect_left(LATENCY_BUCKETS, float(sample.labels["le"]))] += sample.value
            elif sample.name.endswith("_count"):
                requests += sample.value
        for sample in _samples(self.metrics.batch):
            if sample.name.endswith("_sum"):  # batch sizes summed: the images run
                images += sample.value
        return Totals(self.clock(), requests, images, tuple(buckets))


def quantile(q: float, bounds: tuple[float, ...], cumulative: list[float]) -> float | None:
    """The q-quantile of a histogram (cumulative counts per bound, then +Inf), interpolated within its
    bucket; the highest bound when it falls past it; None when the histogram is empty."""
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    for i, count in enumerate(cumulative):
        if count >= rank:
            if i == len(bounds):
                return bounds[-1]
            low, below = (bounds[i - 1], cumulative[i - 1]) if i else (0.0, 0.0)
            inside = count - below
            return low + (bounds[i] - low) * ((rank - below) / inside if inside else 1.0)
    return bounds[-1]


def _samples(metric: Histogram | Gauge) -> list[Sample]:
    """A metric's samples as it would be scraped now, every label's."""
    return [sample for family in metric.collect() for sample in family.samples]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)
