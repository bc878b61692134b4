"""Forwarding an upload to a worker, and trying another when a worker fails.

The body streams from the client to the worker as it arrives. Up to
``retry_body_bytes`` of it is also held, so that when a worker refuses the
connection or dies mid-request the same bytes can go to the next worker. A body
larger than that is still forwarded, but once its head has been let go a failed
attempt can no longer be replayed and the client gets 502.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from visionpool.client.wire import Header
from visionpool.discovery import Instance

from .errors import BadGateway, UploadIncomplete, UpstreamTimeout, gave_up, no_worker
from .metrics import ProxyMetrics
from .pool import Pool

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Content-Length", "Accept", Header.REQUEST_ID)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
# refused, reset, died mid-answer, answered garbage, registered a bad URL: the worker's fault, try another
WORKER_FAILED = aiohttp.ClientError


class ReplayableBody:
    """The client's body as an async stream that can be started again while it is held whole."""

    def __init__(self, content: aiohttp.StreamReader, hold_limit: int) -> None:
        self.content, self.hold_limit = content, hold_limit
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.overflowed = False
        self.sent = 0  # bytes read from the client so far
        self.client_error: BaseException | None = None  # the client's upload broke off: nobody else's fault

    @property
    def replayable(self) -> bool:
        """True while every byte read so far is still held."""
        return not self.overflowed

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in list(self.held):
            yield chunk
        while True:
            try:
                chunk = await self.content.read(CHUNK)
            except Exception as error:
                self.client_error = error
                raise
            if not chunk:
                return
            self.sent += len(chunk)
            if not self.overflowed:
                if self.held_bytes + len(chunk) > self.hold_limit:
                    self.overflowed, self.held, self.held_bytes = True, [], 0
                else:
                    self.held.append(chunk)
                    self.held_bytes += len(chunk)
            yield chunk


class Forwarder:
    """Sends one request to a worker of the pool, retrying on another when one fails."""

    def __init__(
        self,
        pool: Pool,
        session: aiohttp.ClientSession,
        retries: int,
        hold_limit: int,
        timeout: aiohttp.ClientTimeout,
        metrics: ProxyMetrics,
    ) -> None:
        self.pool, self.session, self.retries = pool, session, retries
        self.hold_limit, self.timeout = hold_limit, timeout
        self.metrics = metrics

    async def forward(self, request: web.Request, path: str, model: str | None) -> web.Response:
        body = ReplayableBody(request.content, self.hold_limit)
        headers = {k: request.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in request.headers}
        tried: set[str] = set()
        while True:
            worker = self.pool.pick(model, tried)
            if worker is None:
                raise no_worker(model, self.pool.served()) if not tried else gave_up(tried)
            tried.add(worker.id)
            try:
                response = await self._attempt(worker, path, model, request.query_string, headers, body)
            except WORKER_FAILED as error:
                if body.client_error is not None:
                    raise UploadIncomplete() from None
                self.pool.eject(worker.id, f"{type(error).__name__}: {error}")
                self.metrics.ejections.inc()
                if not body.replayable:
                    raise BadGateway(
                        f"Worker {worker.id} failed mid-upload and the body was too large to replay; retry the request."
                    ) from None
            except TimeoutError:
                raise UpstreamTimeout(f"Worker {worker.id} did not answer within {self.timeout.total} s.") from None
            else:
                retry_busy = response.status == 503 and len(tried) <= self.retries and body.replayable
                if not retry_busy or self.pool.pick(model, tried) is None:
                    self.metrics.bytes.labels("upload").inc(body.sent)
                    request["worker_id"] = worker.id
                    return response
            if len(tried) > self.retries:
                raise gave_up(tried)
            self.metrics.retries.labels(self.metrics.model_label(model)).inc()
            logger.info("retrying request %s on another worker", headers.get(Header.REQUEST_ID, "-"))

    async def _attempt(
        self,
        worker: Instance,
        path: str,
        model: str | None,
        query: str,
        headers: dict[str, str],
        body: ReplayableBody,
    ) -> web.Response:
        url = f"{worker.url}{path}" + (f"?{query}" if query else "")
        started = time.monotonic()
        async with self.session.post(url, data=body.stream(), headers=headers, timeout=self.timeout) as upstream:
            # Read the (small JSON) answer whole before answering: a worker dying mid-answer is still retryable.
            payload = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        self.metrics.upstream.labels(self.metrics.model_label(model)).observe(time.monotonic() - started)
        self.metrics.bytes.labels("download").inc(len(payload))
        kept[Header.WORKER_ID] = worker.id
        return web.Response(status=upstream.status, body=payload, headers=kept)
