"""Forwarding a whole upload to a worker, and trying another when a worker fails.

The front door has already read the body (within the limits), so every attempt sends the same
bytes and a failed one can always be retried elsewhere, within ``retries``. What counts against
a worker (see pool.py): a refused, reset or broken connection, no answer within the timeout,
and 503. A worker's 4xx goes back to the client as it is: it is the request's fault.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from yarl import URL

from visionpool.client.wire import V2_HEADER_LENGTH, Code, Header
from visionpool.discovery import Instance

from .errors import UpstreamTimeout, gave_up, no_worker
from .metrics import ProxyMetrics
from .pool import Pool

logger = logging.getLogger(__name__)

# Content-Encoding is not among them: the front door has already decompressed the body it forwards.
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", Header.REQUEST_ID, V2_HEADER_LENGTH)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
# refused, reset, died mid-answer, answered garbage, registered a bad URL: the worker's fault, try another
WORKER_FAILED = aiohttp.ClientError


class Forwarder:
    """Sends one request to a worker of the pool, retrying on another when one fails."""

    def __init__(
        self,
        pool: Pool,
        session: aiohttp.ClientSession,
        retries: int,
        timeout: aiohttp.ClientTimeout,
        metrics: ProxyMetrics,
    ) -> None:
        self.pool, self.session, self.retries = pool, session, retries
        self.timeout, self.metrics = timeout, metrics
        self._urls: dict[tuple[str, str], URL] = {}  # (worker URL, path) -> parsed once, not per request

    async def forward(
        self,
        request: web.Request,
        body: bytes,
        path: str,
        model: str | None,
        ticket: Callable[[str], str] | None = None,
    ) -> web.Response:
        """Send the request to a worker, another on failure; ``ticket`` signs one for a worker's id (pools whose
        workers serve ticket holders only: the client's own Authorization never reaches a worker)."""
        headers = {k: request.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in request.headers}
        tried: set[str] = set()
        while True:
            worker = self.pool.pick(model, tried)
            if worker is None:
                raise no_worker(model, self.pool.served()) if not tried else gave_up(tried)
            tried.add(worker.id)
            if ticket is not None:
                headers["Authorization"] = f"Bearer {ticket(worker.id)}"
            try:
                query = request.rel_url.raw_query_string
                response = await self._attempt(worker, request.method, path, model, query, headers, body)
            except WORKER_FAILED as error:
                self._failed(worker, f"{type(error).__name__}: {error}")
            except TimeoutError:
                self._failed(worker, f"no answer within {self.timeout.total} s")
                raise UpstreamTimeout(f"Worker {worker.id} did not answer within {self.timeout.total} s.") from None
            else:
                if response.status != 503:
                    self.pool.answered(worker.id)
                    return self._answer(request, response, body, worker)
                # a full queue is a worker at work: ejecting it takes capacity away just when the pool is short of
                # it (one of two workers killed: the other's queue filled with the retries, and it went too)
                if _code(response) != Code.OVERLOADED and self.pool.failed(
                    worker.id, "503 answers in a row", busy=True
                ):
                    self.metrics.ejections.inc()
                if len(tried) > self.retries or self.pool.pick(model, tried) is None:
                    return self._answer(request, response, body, worker)
            if len(tried) > self.retries:
                raise gave_up(tried)
            self.metrics.retries.labels(self.metrics.model_label(model)).inc()
            logger.info("retrying request %s on another worker", headers.get(Header.REQUEST_ID, "-"))

    def _failed(self, worker: Instance, reason: str) -> None:
        self.pool.failed(worker.id, reason)
        self.metrics.ejections.inc()

    def _answer(self, request: web.Request, response: web.Response, body: bytes, worker: Instance) -> web.Response:
        self.metrics.uploaded.inc(len(body))
        request["worker_id"] = worker.id
        return response

    async def _attempt(
        self,
        worker: Instance,
        method: str,
        path: str,
        model: str | None,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> web.Response:
        url = self._urls.get((worker.url, path))
        if url is None:
            if len(self._urls) > 10_000:  # workers come and go: never let this grow without bound
                self._urls.clear()
            url = self._urls[worker.url, path] = URL(worker.url + path)
        if query:
            url = url.with_query(query)
        started = time.monotonic()
        data = body if body or method == "POST" else None
        async with self.session.request(method, url, data=data, headers=headers, timeout=self.timeout) as upstream:
            # Read the (small JSON) answer whole before answering: a worker dying mid-answer is still retryable.
            payload = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        self.metrics.upstream.labels(self.metrics.model_label(model)).observe(time.monotonic() - started)
        self.metrics.downloaded.inc(len(payload))
        kept[Header.WORKER_ID] = worker.id
        return web.Response(status=upstream.status, body=payload, headers=kept)


def _code(response: web.Response) -> str | None:
    """The error code of a worker's JSON error answer, if it is one."""
    try:
        return str(json.loads(response.body)["error"]["code"])  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError):
        return None
