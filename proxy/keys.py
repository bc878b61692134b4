"""API keys at the proxy: only their hashes are kept (in a file, or in Consul's KV store), with each key's models
and rate, watched for changes.

Usage:
    store = open_store(Path("keys.json"))      # or open_store("consul:visionpool/api-keys", consul_url, token)
    key = add_key(store, "alice", rate=10, burst=20, models=["coco-ssd"])   # shown once, never stored
    ring = KeyRing(Path("keys.json"))          # ring.reload() when the file changed (the proxy polls it)
    ring.load(parse(value, where))             # a new value of a KV key (the proxy watches it)
    name = ring.admit(request.headers.get("Authorization"), model)   # Unauthorized, Forbidden or RateLimited

A key is ``vp_<id>_<secret>``: the id finds its entry, the secret's SHA-256 is compared in constant time (a
random 32-byte secret needs no slow hash). The keys are JSON: a file written atomically with mode 0600, or a key
of Consul's KV store written with check-and-set. A key revoked there stops working at the proxy's next look: every
half second for a file, at once for Consul (a blocking query). Each key has a token bucket per proxy: ``rate``
requests a second on average, ``burst`` at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from visionpool.client.wire import Forbidden, RateLimited, Unauthorized
from visionpool.discovery.kv import ConsulKV
from visionpool.serving.settings import kv_key

PREFIX = "vp"
Entries = dict[str, dict[str, Any]]  # a key's name -> its id, hash, rate, burst, models, creation time


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
    """The keys of one file or KV key, as this proxy last read them."""

    def __init__(self, where: Path | str) -> None:
        self.where = where
        self.grants: dict[str, Grant] = {}  # key id -> grant
        self.by_name: dict[str, Grant] = {}  # the same grants by key name
        self.stamp: tuple[int, int] | None = None
        if kv_key(where) is None:
            self.reload()  # a file now; a KV key by the proxy's watch (until it answers, every key is refused)

    def reload(self) -> bool:
        """Read the file again when it changed (a new or revoked key); True when it did. A file that cannot be
        read keeps the keys in force and raises, so the caller can say so."""
        path = Path(self.where)
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self.stamp:
            return False
        self.load(read_file(path))
        self.stamp = stamp
        return True

    def load(self, entries: Entries) -> None:
        """Hold these keys instead of the ones held (all of them, or none: a bad entry raises first); a key that
        stays keeps its bucket."""
        old, grants = self.grants, {}
        for name, entry in entries.items():
            grant = Grant(name, entry["id"], entry["sha256"], float(entry["rate"]), float(entry["burst"]),
                          tuple(entry.get("models", ())))  # fmt: skip
            kept = old.get(grant.key_id)
            if kept is not None and kept.sha256 == grant.sha256:  # the same key keeps its bucket
                grant.tokens, grant.refilled = kept.tokens, kept.refilled
            grants[grant.key_id] = grant
        self.grants, self.by_name = grants, {grant.name: grant for grant in grants.values()}

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


class Store(Protocol):
    """Where keys are kept: a file, or a key of Consul's KV store."""

    where: str

    def read(self) -> Entries: ...

    def modify(self, change: Callable[[Entries], None]) -> None: ...


class FileStore:
    """Keys in a JSON file, written atomically and readable by its owner alone: a proxy never reads half a file."""

    def __init__(self, path: Path) -> None:
        self.path, self.where = path, str(path)

    def read(self) -> Entries:
        return read_file(self.path)

    def modify(self, change: Callable[[Entries], None]) -> None:
        entries = read_file(self.path) if self.path.exists() else {}
        change(entries)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(dump(entries))
        os.replace(partial, self.path)


class ConsulStore:
    """Keys in one key of Consul's KV store, written with check-and-set: two writers at once lose no key."""

    def __init__(self, where: str, key: str, kv: ConsulKV) -> None:
        self.where, self.key, self.kv = where, key, kv

    def read(self) -> Entries:
        _, value = self.kv.get(self.key)
        if value is None:
            raise ValueError(f"{self.where}: consul at {self.kv.url} has no such key (visionpool keys add makes it)")
        return parse(value, self.where)

    def modify(self, change: Callable[[Entries], None]) -> None:
        def changed(value: bytes | None) -> bytes:
            entries = parse(value, self.where) if value is not None else {}
            change(entries)
            return dump(entries)

        self.kv.update(self.key, changed)


def open_store(where: Path | str, consul_url: str = "", consul_token: str | None = None) -> Store:
    """The store ``where`` names: ``consul:<key>`` (through the agent at ``consul_url``) or a file's path."""
    key = kv_key(where)
    if key is None:
        return FileStore(Path(where))
    return ConsulStore(str(where), key, ConsulKV(consul_url, consul_token))


def add_key(store: Store, name: str, rate: float, burst: float, models: list[str]) -> str:
    """Add a key called ``name`` (the store is made if missing); the key itself, which only its hash keeps."""
    if not name or not name.replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"a key's name is letters, digits, '-' and '.', got {name!r}")
    if rate <= 0 or burst < 1:
        raise ValueError(f"rate must be above 0 and burst at least 1, got {rate} and {burst}")
    key_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)

    def add(entries: Entries) -> None:
        if name in entries:
            raise ValueError(f"{store.where} has a key called {name!r} already: revoke it first, or choose another")
        entries[name] = {"id": key_id, "sha256": _digest(secret), "rate": rate, "burst": burst, "models": models,
                         "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip

    store.modify(add)
    return f"{PREFIX}_{key_id}_{secret}"


def revoke_key(store: Store, name: str) -> None:
    def revoke(entries: Entries) -> None:
        if name not in entries:
            raise ValueError(f"{store.where} has no key called {name!r} (it has {', '.join(entries) or 'none'})")
        del entries[name]

    store.modify(revoke)


def read_file(path: Path) -> Entries:
    """The file's entries by name; ValueError naming the file when it is not a key file."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path} is not an API key file ({type(error).__name__}: {error})") from None
    return parse(text, str(path))


def parse(text: bytes, where: str) -> Entries:
    """The entries by name in a key file's text; ValueError naming where it came from when it is not one."""
    try:
        entries = json.loads(text)["keys"]
        for name, entry in entries.items():
            if not (isinstance(entry["id"], str) and isinstance(entry["sha256"], str)):
                raise TypeError(f"key {name!r}: id and sha256 are strings")
            if float(entry["rate"]) <= 0 or float(entry["burst"]) < 1:
                raise ValueError(f"key {name!r}: rate above 0 and burst at least 1")
            if not all(isinstance(model, str) for model in entry.get("models", [])):
                raise TypeError(f"key {name!r}: models is a list of names")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{where} is not an API key file ({type(error).__name__}: {error})") from None
    return dict(entries)


def dump(entries: Entries) -> bytes:
    return json.dumps({"version": 1, "keys": entries}, indent=2).encode()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
