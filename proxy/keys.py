"""API keys at the proxy: a file that holds only their hashes, each key's models and rate, watched for changes.

Usage:
    key = add_key(Path("keys.json"), "alice", rate=10, burst=20, models=["coco-ssd"])   # shown once, never stored
    ring = KeyRing(Path("keys.json"))          # ring.reload() when the file changed (the proxy polls it)
    name = ring.admit(request.headers.get("Authorization"), model)   # Unauthorized, Forbidden or RateLimited

A key is ``vp_<id>_<secret>``: the id finds its entry, the secret's SHA-256 is compared in constant time (a
random 32-byte secret needs no slow hash). The file is JSON written atomically with mode 0600; a key revoked
in it stops working at the proxy's next look at the file (every half second). Each key has a token bucket per
proxy: ``rate`` requests a second on average, ``burst`` at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionpool.client.wire import Forbidden, RateLimited, Unauthorized

PREFIX = "vp"


@dataclass
class Grant:
    """One key's entry: who, what it may use, how fast; and its bucket at this proxy."""

    name: str
    key_id: str
    sha256: str
    rate: float
    burst: float
    models: tuple[str, ...]  # empty: every model
    tokens: float = field(default=-1.0)
    refilled: float = field(default=0.0)

    def take(self, now: float) -> float:
        """Take one request's token; 0 when there was one, else the seconds until there is."""
        if self.tokens < 0:
            self.tokens, self.refilled = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class KeyRing:
    """The keys of one file, as this proxy last read it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.grants: dict[str, Grant] = {}  # key id -> grant
        self.by_name: dict[str, Grant] = {}  # the same grants by key name
        self.stamp: tuple[int, int] | None = None
        self.reload()

    def reload(self) -> bool:
        """Read the file again when it changed (a new or revoked key); True when it did. A file that cannot be
        read keeps the keys in force and raises, so the caller can say so."""
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self.stamp:
            return False
        entries = read_file(self.path)
        old = self.grants
        self.grants = {}
        for name, entry in entries.items():
            grant = Grant(name, entry["id"], entry["sha256"], float(entry["rate"]), float(entry["burst"]),
                          tuple(entry.get("models", ())))  # fmt: skip
            kept = old.get(grant.key_id)
            if kept is not None and kept.sha256 == grant.sha256:  # the same key keeps its bucket
                grant.tokens, grant.refilled = kept.tokens, kept.refilled
            self.grants[grant.key_id] = grant
        self.by_name = {grant.name: grant for grant in self.grants.values()}
        self.stamp = stamp
        return True

    def admit(self, authorization: str | None, model: str | None) -> str:
        """The name of the key that may send this request; Unauthorized, Forbidden or RateLimited otherwise."""
        grant = self._grant(authorization)
        if grant.models and model not in grant.models:
            allowed = ", ".join(grant.models)
            if model is None:
                raise Forbidden(f"Key {grant.name!r} may use only {allowed}: name the model (/models/NAME/predict).")
            raise Forbidden(f"Key {grant.name!r} may not use model {model!r}; it may use {allowed}.")
        wait = grant.take(time.monotonic())
        if wait > 0:
            raise RateLimited(
                f"Key {grant.name!r} is over its rate of {grant.rate:g} requests/s (burst {grant.burst:g}).",
                retry_after=max(1, math.ceil(wait)),
            )
        return grant.name

    def grant_named(self, name: str | None) -> Grant | None:
        """The grant of the key called ``name`` (None: no such key any longer); asked per signed ticket."""
        return self.by_name.get(name) if name is not None else None

    def _grant(self, authorization: str | None) -> Grant:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("This pool needs an API key: send Authorization: Bearer <key>.")
        parts = token.strip().split("_", 2)
        grant = self.grants.get(parts[1]) if len(parts) == 3 and parts[0] == PREFIX else None
        if grant is None or not hmac.compare_digest(grant.sha256, _digest(parts[2])):
            raise Unauthorized("The API key is not valid (unknown, revoked or mistyped).")
        return grant


def add_key(path: Path, name: str, rate: float, burst: float, models: list[str]) -> str:
    """Add a key called ``name`` to the file (made if missing); the key itself, which only its hash keeps."""
    if not name or not name.replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"a key's name is letters, digits, '-' and '.', got {name!r}")
    if rate <= 0 or burst < 1:
        raise ValueError(f"rate must be above 0 and burst at least 1, got {rate} and {burst}")
    entries = read_file(path) if path.exists() else {}
    if name in entries:
        raise ValueError(f"{path} has a key called {name!r} already: revoke it first, or choose another name")
    key_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    entries[name] = {"id": key_id, "sha256": _digest(secret), "rate": rate, "burst": burst, "models": models,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    _write(path, entries)
    return f"{PREFIX}_{key_id}_{secret}"


def revoke_key(path: Path, name: str) -> None:
    entries = read_file(path)
    if name not in entries:
        raise ValueError(f"{path} has no key called {name!r} (it has {', '.join(entries) or 'none'})")
    del entries[name]
    _write(path, entries)


def read_file(path: Path) -> dict[str, dict[str, Any]]:
    """The file's entries by name; ValueError naming the file when it is not a key file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["keys"]
        for entry in entries.values():
            entry["id"], entry["sha256"], entry["rate"], entry["burst"]  # noqa: B018 - every entry has them
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not an API key file ({type(error).__name__}: {error})") from None
    return dict(entries)


def _write(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Atomically, readable by its owner alone: a proxy never reads half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump({"version": 1, "keys": entries}, file, indent=2)
    os.replace(partial, path)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
