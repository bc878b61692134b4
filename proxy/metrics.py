"""What a proxy tells Prometheus (GET /metrics) and its log: one record per request.

Usage:
    metrics = ProxyMetrics(pool)
    app.middlewares.append(metrics.middleware)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from visionpool.client.wire import Header
from visionpool.serving.frontdoor import FrontDoor
from visionpool.serving.options import log_fields

from .pool import Pool

logger = logging.getLogger("visionpool.proxy.requests")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HealthyWorkers:
    """Healthy workers per model, read from the pool at scrape time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "visionpool_proxy_healthy_workers", "Workers in rotation, per model.", labels=["model"]
        )
        for model in sorted(self.pool.served()):
            family.add_metric([model], len(self.pool.healthy(model)))
        yield family


class ProxyMetrics:
    """The proxy's metrics in a registry of its own."""

    def __init__(self, pool: Pool, door: FrontDoor) -> None:
        disable_created_metrics()
        self.pool = pool
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        registry.register(HealthyWorkers(pool))
        registry.register(door.collector("proxy"))
        self.requests = Counter(
            "visionpool_proxy_requests",
            "Requests answered, by route, model and HTTP status.",
            ["route", "model", "status"],
            registry=registry,
        )
        self.upstream = Histogram(
            "visionpool_proxy_upstream_duration_seconds",
            "Time of one call to a worker.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "visionpool_proxy_retries", "Requests sent again to another worker.", ["model"], registry=registry
        )
        self.ejections = Counter(
            "visionpool_proxy_ejections", "Workers taken out of rotation after a failure.", registry=registry
        )
        self.bytes = Counter(
            "visionpool_proxy_bytes", "Bytes carried between clients and workers.", ["direction"], registry=registry
        )
        self.uploaded, self.downloaded = self.bytes.labels("upload"), self.bytes.labels("download")
        self.lookups = Counter(
            "visionpool_proxy_lookups", "p2p lookups answered with a worker.", ["model"], registry=registry
        )

    def model_label(self, model: str | None) -> str:
        """A bounded label: a served model's name, 'default', or 'unknown'."""
        if model is None:
            return "default"
        return model if model in self.pool.served() else "unknown"

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count every request by route and status, and log one line for each predict and lookup."""
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            self._record(request, status, time.monotonic() - started)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _record(self, request: web.Request, status: int, seconds: float) -> None:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        model = request.match_info.get("name") or request.query.get("model") or None
        label = self.model_label(model) if route.endswith(("predict", "/lookup")) else "-"
        self.requests.labels(route, label, str(status)).inc()
        if label != "-":
            fields = {
                "request_id": request.headers.get(Header.REQUEST_ID, "-"),
                "route": route,
                "model": label,
                "status": status,
                "worker": request.get("worker_id", "-"),
                "total_ms": round(seconds * 1000, 2),
            }
            log_fields(logger, fields)
