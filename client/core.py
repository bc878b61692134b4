"""The client's logic, free of I/O: what to send, where, and what to do with each answer.

A call is a generator that yields ``Request`` and ``Sleep`` steps and is sent back
each step's outcome (a ``Response``, or the transport's exception). ``Client``
drives it with requests, ``AsyncClient`` with aiohttp; neither decides anything.

p2p mode: ask the proxy's ``/lookup`` for a worker, post straight to it, keep it
while it answers, and look up again when it fails (refused, 503, timeout).
Proxy mode: post through the proxy. Both retry what is worth retrying, honouring
Retry-After, within the retry budget.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import v2
from .errors import BadRequest, ClientError, ConnectionFailed, Timeout, error_for
from .types import Result
from .wire import LOOKUP, Header, predict_path, read_error

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Any  # Any: PIL image, numpy array
MODES = ("p2p", "proxy")
PROTOCOLS = ("predict", "v2")  # our /predict JSON, or the Open Inference Protocol (KServe v2)
BACKOFF_START, BACKOFF_MAX = 0.1, 2.0
RETRY_AFTER_MAX = 30.0  # a server's Retry-After is honoured up to this many seconds
P2P_REFRESH_SECONDS = 10.0  # p2p: a slot asks the proxy for a worker again this often (a few hundred bytes)


@dataclass(frozen=True)
class Request:
    """One HTTP request for the driver to make."""

    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait before the next attempt."""

    seconds: float


@dataclass(frozen=True)
class Response:
    """What the driver got back."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


Step = Request | Sleep
Outcome = Response | Exception | None
Flow = Generator[Step, Outcome, Any]


def image_bytes(image: ImageInput) -> bytes:
    """The bytes to upload for a path, bytes, a binary file, a PIL image or a numpy array."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if hasattr(image, "read"):
        return image.read()  # type: ignore[no-any-return]
    from PIL import Image  # only for in-memory pictures

    if not isinstance(image, Image.Image):
        import numpy as np

        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise TypeError("a numpy image must be uint8, height x width (x 3 RGB or x 4 RGBA)")
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)  # lossless, and fast to write
    return buffer.getvalue()


def signed(headers: dict[str, str], url: str, proxy: str, api_key: str | None) -> dict[str, str]:
    """The request's headers, with the API key for the proxy's own URLs (never for a worker's, in p2p mode)."""
    if not api_key or not url.startswith(proxy.rstrip("/") + "/"):
        return headers
    return {**headers, "Authorization": f"Bearer {api_key}"}


class Route:
    """Where requests go: the proxy, or (p2p) the worker it handed out last to each slot.

    A slot is one stream of requests made one after another (a thread or task of
    ``predict_many``; plain ``predict`` calls share slot 0). Each slot keeps its own
    worker, so concurrent slots spread over the pool as the proxy's rotation hands
    workers out, and each sticks to its worker while it answers, for ``refresh``
    seconds at most: then it asks again, so that a worker that joined (or came back)
    gets its share of a long-running client's load, not only of new clients'.
    """

    def __init__(self, url: str, mode: str, protocol: str = "predict", refresh: float = P2P_REFRESH_SECONDS) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'p2p' or 'proxy', got {mode!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 'predict' or 'v2', got {protocol!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must look like http://proxy-host:8080, got {url!r}")
        self.url, self.mode, self.protocol = url.rstrip("/"), mode, protocol
        self.refresh = refresh
        # p2p: (model, slot) -> (the worker's URL, until when, the proxy's ticket for it when the pool signs them)
        self.workers: dict[tuple[str | None, int], tuple[str, float, str | None]] = {}

    def base(self, model: str | None, slot: int) -> str | None:
        """Where to post now; None when p2p has no worker for this slot (yet, or any longer)."""
        if self.mode == "proxy":
            return self.url
        kept = self.workers.get((model, slot))
        return kept[0] if kept and time.monotonic() < kept[1] else None

    def stale(self, model: str | None, slot: int) -> dict[str, Any] | None:
        """The worker this slot used until its refresh came due (None if it failed or there was none)."""
        kept = self.workers.get((model, slot))
        return {"url": kept[0], "ticket": kept[2]} if kept else None

    def keep(self, model: str | None, slot: int, worker: dict[str, Any]) -> str:
        """The worker the proxy handed this slot (its URL, and its ticket): used until it fails or ``refresh``
        seconds pass (well within a ticket's life, so a ticket is renewed before it expires)."""
        self.workers[model, slot] = (worker["url"], time.monotonic() + self.refresh, worker.get("ticket"))
        return str(worker["url"])

    def ticket(self, model: str | None, slot: int) -> str | None:
        """The ticket for this slot's worker, when the pool signs them."""
        kept = self.workers.get((model, slot))
        return kept[2] if kept and self.mode == "p2p" else None

    def forget(self, model: str | None, slot: int) -> None:
        """The worker failed: this slot looks up another next time."""
        self.workers.pop((model, slot), None)


def predict_flow(
    route: Route,
    image: bytes,
    model: str | None,
    threshold: float | None,
    top_k: int | None,
    retries: int,
    slot: int = 0,
) -> Flow:
    """Predict one image: look up (p2p), post, retry; returns a Result or raises a ClientError."""
    request_id = uuid.uuid4().hex
    if route.protocol == "v2":
        if not model:
            raise BadRequest("the v2 protocol names the model in the URL: pass a model", code="invalid_request")
        path, headers, body = v2.request(model, image, threshold, top_k)
        params: dict[str, str] = {}
    else:
        params, path, body = _query(threshold, top_k), predict_path(model), image
        headers = {"Content-Type": "application/octet-stream"}
    headers[Header.REQUEST_ID] = request_id
    error: ClientError = ConnectionFailed("no attempt was made")
    renewed = False
    for attempt in range(retries + 1):
        if attempt:
            wait = min(error.retry_after, RETRY_AFTER_MAX) if error.retry_after is not None else _backoff(attempt)
            yield Sleep(wait)
        try:
            base = route.base(model, slot)
            if base is None:
                base = route.keep(model, slot, (yield from refreshed_worker(route, model, slot)))
            ticket = route.ticket(model, slot)
            sent = {**headers, "Authorization": f"Bearer {ticket}"} if ticket else headers
            outcome = yield Request("POST", base + path, params, sent, body)
            return v2.result_of(*_decode(outcome)) if route.protocol == "v2" else Result.from_json(*_decode(outcome))
        except ClientError as failure:
            # a worker refusing its ticket (expired, or the worker restarted with a new id): ask /lookup again, once
            if failure.status == 401 and route.mode == "p2p" and not renewed:
                renewed = True
            elif not failure.retryable:
                raise
            error = failure
            route.forget(model, slot)
    raise error


def refreshed_worker(route: Route, model: str | None, slot: int) -> Flow:
    """A worker from the proxy's rotation ({"url", "ticket", ...}); when the proxy cannot answer, the one the slot
    had while it was working (p2p keeps going through a proxy outage)."""
    try:
        return (yield from lookup_flow(route, model))  # type: ignore[no-any-return]
    except ClientError as failure:
        stale = route.stale(model, slot)
        if stale is None or not failure.retryable:
            raise
        return stale


def lookup_flow(route: Route, model: str | None) -> Flow:
    """The proxy's pick of a worker: {"url", "worker_id", "model"}."""
    outcome = yield Request("GET", route.url + LOOKUP, {"model": model} if model else {})
    return _decode(outcome)[0]


def get_flow(route: Route, path: str) -> Flow:
    """GET a JSON document from the proxy."""
    outcome = yield Request("GET", route.url + path)
    return _decode(outcome)[0]


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_START * 2 ** (attempt - 1), BACKOFF_MAX))


def _decode(outcome: Outcome) -> tuple[dict[str, Any], dict[str, str]]:
    """A successful answer's JSON and headers; a typed ClientError for anything else."""
    if isinstance(outcome, TimeoutError):
        raise Timeout(f"no answer in time ({outcome})", code="timeout")
    if isinstance(outcome, ValueError):  # a malformed URL, a redirect loop: retrying cannot help
        raise BadRequest(f"{type(outcome).__name__}: {outcome}", code="invalid_request")
    if isinstance(outcome, Exception) or outcome is None:
        raise ConnectionFailed(f"{type(outcome).__name__}: {outcome}", code="connection_failed")
    try:
        body = json.loads(outcome.body or b"null")
    except ValueError:
        body = None
    if outcome.status == 200 and isinstance(body, dict):
        return body, outcome.headers
    code, message = read_error(body)
    retry_after = outcome.headers.get(Header.RETRY_AFTER.lower())
    raise error_for(
        outcome.status,
        code or f"http_{outcome.status}",
        message or outcome.body[:200].decode(errors="replace"),
        float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
    )


def _query(threshold: float | None, top_k: int | None) -> dict[str, str]:
    """The predict query parameters that are set."""
    params = {}
    if threshold is not None:
        params["threshold"] = str(threshold)
    if top_k is not None:
        params["top_k"] = str(top_k)
    return params
