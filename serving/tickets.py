"""p2p tickets: what the proxy signs so that a worker serves only whom the proxy sent, with no round trip.

Usage:
    secret = read_secret(Path("pool.secret"))                  # proxies and workers share it
    ticket = issue(secret, key="alice", model="coco-ssd", worker="w1", ttl=60, rate=10, burst=20)
    grant = Tickets(secret, worker_id="w1").admit("Bearer " + ticket, "coco-ssd")   # 401, 403 or 429 otherwise

A ticket is ``v1.<payload>.<signature>``, both base64url: the payload is JSON naming the API key, the model
("" for any), the worker, the expiry (Unix seconds) and the key's rate; the signature is HMAC-SHA256 over the
payload with the pool secret. Like a presigned upload URL, it is worth its lifetime at most, and a worker
counts each ticket's requests against the rate it carries, so a leaked one is bounded too.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from visionpool.client.wire import Forbidden, RateLimited, Unauthorized

TICKET_TTL = 60.0  # seconds; the client asks /lookup again every 10 s anyway (a new ticket each time)
MAX_TRACKED = 10_000  # tickets whose rate a worker tracks at once (the oldest is forgotten first)


def read_secret(path: Path) -> bytes:
    """The pool secret: the file's bytes, at least 32 of them."""
    return check_secret(path.read_bytes(), str(path))


def check_secret(secret: bytes, where: str) -> bytes:
    """The secret read from ``where`` without surrounding white space; ValueError when it is too short."""
    secret = secret.strip()
    if len(secret) < 32:
        raise ValueError(f"{where}: a pool secret has at least 32 bytes (make one: head -c 48 /dev/urandom | base64)")
    return secret


def issue(secret: bytes, *, key: str, model: str | None, worker: str, ttl: float, rate: float, burst: float) -> str:
    """A ticket for ``key`` to send ``model`` (any, for None) requests to ``worker`` for ``ttl`` seconds."""
    payload = {"k": key, "m": model or "", "w": worker, "e": int(time.time() + ttl), "r": rate, "b": burst}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"v1.{body}.{_b64(_sign(secret, body))}"


class Tickets:
    """A worker's check of the tickets it is sent, and each ticket's bucket."""

    def __init__(self, secret: bytes, worker_id: str) -> None:
        self.secret, self.worker_id = secret, worker_id
        self.buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def admit(self, authorization: str | None, model: str) -> dict[str, Any]:
        """The ticket's payload when it lets this request in; Unauthorized, Forbidden or RateLimited otherwise."""
        payload, signature = self.check(authorization, model)
        self.take(signature, float(payload["r"]), float(payload["b"]))
        return payload

    def check(self, authorization: str | None, model: str) -> tuple[dict[str, Any], str]:
        """The ticket's payload and signature when it is the pool's, current, and for this worker and model,
        without counting the request against its rate (take() does); Unauthorized or Forbidden otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        parts = token.strip().split(".")
        if scheme.lower() != "bearer" or len(parts) != 3 or parts[0] != "v1":
            raise Unauthorized("This worker serves the pool's clients only: ask the proxy's /lookup for a ticket.")
        if not hmac.compare_digest(_unb64(parts[2]), _sign(self.secret, parts[1])):
            raise Unauthorized("The ticket's signature is not the pool's: ask the proxy's /lookup for a ticket.")
        payload = json.loads(_unb64(parts[1]))
        if payload["e"] < time.time():
            raise Unauthorized("The ticket has expired: ask the proxy's /lookup for a new one.")
        if payload["w"] != self.worker_id:
            raise Forbidden(f"The ticket is for worker {payload['w']!r}, not this one ({self.worker_id!r}).")
        if payload["m"] and payload["m"] != model:
            raise Forbidden(f"The ticket is for model {payload['m']!r}, not {model!r}.")
        return payload, parts[2]

    def take(self, ticket: str, rate: float, burst: float) -> None:
        """Count one request against the ticket (by its signature): RateLimited when over its key's rate."""
        now = time.monotonic()
        with self._lock:  # the event loop, gRPC's threads and front processes' links all take
            tokens, then = self.buckets.pop(ticket, (burst, now))
            tokens = min(burst, tokens + (now - then) * rate)
            if tokens < 1.0:
                self.buckets[ticket] = (tokens, now)
                wait = max(1, math.ceil((1 - tokens) / rate))
                raise RateLimited("This ticket is over its key's rate.", retry_after=wait)
            self.buckets[ticket] = (tokens - 1.0, now)
            while len(self.buckets) > MAX_TRACKED:
                self.buckets.popitem(last=False)


def _sign(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise Unauthorized("The ticket is not one: ask the proxy's /lookup for a ticket.") from None
