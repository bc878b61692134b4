"""What a worker tells Prometheus (GET /metrics) and its log: one record per request.

Usage:
    metrics = WorkerMetrics(get_models)              # one registry per app
    with metrics.track(model_name, request_id) as request:
        ...                                          # request.stages = {...}; errors are counted too

Histograms, not summaries, so they aggregate across workers. Names follow
Prometheus conventions: ``visionpool_worker_*``, base units, ``_total`` counters.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import HTTPException

from visionpool.client.options import log_fields

from .errors import ServiceError, http_error_code

logger = logging.getLogger("visionpool.worker.requests")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
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

    @contextlib.contextmanager
    def track(self, model: str, request_id: str) -> Iterator[Tracked]:
        """Count and time one predict request, whatever its outcome; log one line for it."""
        request = Tracked(model, request_id)
        started = time.monotonic()
        self.in_flight.inc()
        try:
            yield request
        except ServiceError as error:
            request.status, request.outcome = error.status, error.code
            raise
        except HTTPException as error:  # werkzeug's own: a body over the limit, a malformed form
            request.status, request.outcome = http_error_code(error)
            raise
        except Exception:
            request.status, request.outcome = 500, "internal"
            raise
        finally:
            self.in_flight.dec()
            self._record(request, time.monotonic() - started)

    def _record(self, request: Tracked, total: float) -> None:
        self.requests.labels(request.model, str(request.status), request.outcome).inc()
        self.latency.labels(request.model).observe(total)
        for stage, seconds in request.stages.items():
            self.stage.labels(request.model, stage).observe(seconds)
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
