"""What every service of the pool is told: where it listens, how it logs, how it finds the registry.

Usage:
    @dataclass
    class WorkerSettings(ServiceSettings): ...     # adds its own fields; shares these, flags and variables alike

Workers and proxies read the same registry and logging variables, so one environment
(honcho's .env, a container's) configures a whole machine. The proxy's listen address has
variables of its own (``ENV_SCOPE = "PROXY_"``: ``VISIONPOOL_PROXY_PORT``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .options import configure_logging, option
from .tickets import read_secret

MiB = 1024 * 1024
CONSUL_PREFIX = "consul:"  # where a secret's file is expected, consul:<key> names a key of Consul's KV store
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("plain", "json")


def kv_key(where: str | Path | None) -> str | None:
    """The key of Consul's KV store that ``consul:<key>`` names; None for anything else (a file's path)."""
    text = str(where) if where is not None else ""
    if not text.startswith(CONSUL_PREFIX):
        return None
    key = text[len(CONSUL_PREFIX) :].strip("/")
    if not key:
        raise ValueError(f"{text!r} names no key: write consul:<key>, e.g. consul:visionpool/pool-secret")
    return key


def default_token_file() -> Path:
    """Where the embedded registry keeps its token on this machine (readable by this user only)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "visionpool" / "registry-token"


@dataclass
class ServiceSettings:
    """The settings a worker and a proxy share."""

    ENV_SCOPE: ClassVar[str] = ""  # inserted into the variables of the listen address
    DEFAULT_PORT: ClassVar[int] = 8000
    REGISTRIES: ClassVar[tuple[str, ...]] = ("local", "consul")
    DEFAULT_REGISTRY: ClassVar[str] = "local"

    host: str = option("127.0.0.1", "Address to listen on; 0.0.0.0 for every interface.", scoped=True)
    port: int | None = option(
        None, "Port to listen on (a worker: honcho's $PORT, else 8000; the proxy: 8080).", scoped=True
    )
    max_body_bytes: int = option(20 * MiB, "Largest request body accepted, in bytes; larger ones get 413 at once.")
    header_timeout: float = option(
        10.0, "Seconds a request's head may take to arrive (408); also how long an idle keep-alive connection stays."
    )
    body_timeout: float = option(30.0, "Seconds a request's whole body may take to arrive once its head is in (408).")
    max_connections: int = option(
        4096, "Open connections at most; beyond, the oldest one waiting for a request is closed, else 503."
    )
    max_buffered_bytes: int = option(
        512 * MiB, "Request bodies held in memory at once, all connections together; beyond, 503 busy."
    )
    drain_timeout: float = option(10.0, "Seconds given to requests in flight to finish at shutdown.")
    tls_cert: Path | None = option(
        None, "Certificate (PEM, chain included) to serve HTTPS with; reloaded on SIGHUP.", kind=Path, metavar="FILE"
    )
    tls_key: Path | None = option(None, "The certificate's private key (PEM).", kind=Path, metavar="FILE", secret=True)
    tls_ca: Path | None = option(
        None,
        "CA certificate the peers' certificates are verified against: a proxy's workers', a worker's registry "
        "(default: the system's CAs).",
        kind=Path,
        metavar="FILE",
    )
    tls_client_ca: Path | None = option(
        None,
        "CA whose certificates clients must present (mutual TLS): with it, HTTPS and gRPC refuse a handshake without "
        "one (a worker's: the proxy's, and p2p clients' too).",
        kind=Path,
        metavar="FILE",
    )
    pool_secret_file: Path | None = option(
        None,
        "File holding the secret proxies and workers share (32+ bytes), or consul:KEY for a key of Consul's KV store "
        "(--consul-url, --consul-token): the proxy signs p2p tickets with it, and a worker given it serves uploads "
        "only with a valid ticket.",
        kind=Path,
        metavar="FILE",
    )
    log_level: str = option("INFO", "Log level: DEBUG, INFO, WARNING or ERROR.")
    log_format: str = option("plain", "Log format: 'plain' lines, or 'json' (one object per line, with each field).")
    registry: str | None = option(
        None, "Service registry: 'local' (the proxy's own) or 'consul'; a worker also takes 'none' (its default)."
    )
    registry_url: str = option(
        "http://127.0.0.1:8080", "The proxy holding the local registry (workers register there)."
    )
    registry_token: str | None = option(
        None, "Shared secret of the local registry; when unset, read from --registry-token-file.", secret=True
    )
    registry_token_file: Path = option(
        default_factory=default_token_file,
        help="File holding the local registry's token; the proxy creates it (mode 600) when missing.",
        kind=Path,
        metavar="FILE",
    )
    registry_ttl: float = option(10.0, "Seconds a local registration lives without renewal (renewed every third).")
    consul_url: str = option("http://127.0.0.1:8500", "Consul agent URL, for --registry consul.")
    consul_token: str | None = option(None, "Consul ACL token, for --registry consul.", secret=True)

    @property
    def scheme(self) -> str:
        """http, or https when the service has a certificate."""
        return "https" if self.tls_cert is not None else "http"

    def __post_init__(self) -> None:
        """Fill in the service's defaults and check every shared field; ValueError says what to pass."""
        self.port = self.default_port() if self.port is None else self.port
        self.registry = self.registry or self.DEFAULT_REGISTRY
        self.registry_token_file = Path(self.registry_token_file)
        for name in ("tls_cert", "tls_key", "tls_ca", "tls_client_ca"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name}: {value} is not a file")
            setattr(self, name, Path(value) if value is not None else None)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: pass both (--tls-cert FILE --tls-key FILE) or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca asks clients for certificates over TLS: pass --tls-cert and --tls-key too")
        if self.pool_secret_file is not None and kv_key(self.pool_secret_file) is None:  # a KV key is read at start
            self.pool_secret_file = Path(self.pool_secret_file)
            try:
                read_secret(self.pool_secret_file)
            except OSError as error:
                raise ValueError(f"pool_secret_file: {error}") from None
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be 'plain' or 'json', got {self.log_format!r}")
        if self.registry not in self.REGISTRIES:
            raise ValueError(f"unknown registry {self.registry!r}; choose one of {', '.join(self.REGISTRIES)}")
        for name in ("max_body_bytes", "max_connections", "max_buffered_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if min(self.header_timeout, self.body_timeout) <= 0 or self.drain_timeout < 0:
            raise ValueError("header_timeout and body_timeout must be above 0, drain_timeout at least 0 (seconds)")
        if self.registry_ttl < 0.5:
            raise ValueError(f"registry_ttl must be at least 0.5 seconds, got {self.registry_ttl}")

    def default_port(self) -> int:
        return self.DEFAULT_PORT

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to listen on."""
        assert self.port is not None  # filled in by __post_init__
        return self.host, self.port

    def configure_logging(self) -> None:
        configure_logging(self.log_level, self.log_format)
