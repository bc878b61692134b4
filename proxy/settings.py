"""The proxy's settings: defaults here, then ``VISIONPOOL_*`` environment, then flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from visionpool.discovery.settings import RegistrySettings, check_logging

MiB = 1024 * 1024


@dataclass
class ProxySettings(RegistrySettings):
    """Everything a proxy process is told at start-up."""

    # Address to listen on; 0.0.0.0 for every interface.
    host: str = field(default="127.0.0.1", metadata={"env": "PROXY_HOST"})
    # Port to listen on (honcho's $PORT is ignored: the pool's address stays put).
    port: int = field(default=8080, metadata={"env": "PROXY_PORT"})
    # Seconds to wait for a worker to accept a connection before trying another.
    connect_timeout: float = 2.0
    # Seconds a whole upstream call may take before the client gets 504.
    upstream_timeout: float = 60.0
    # Other workers tried after one fails (connection refused, died mid-request, 503).
    retries: int = 2
    # Bodies up to this size are held so a failed attempt can be replayed; larger ones are streamed only.
    retry_body_bytes: int = 16 * MiB
    # Seconds a failing worker stays out of rotation (unless the registry drops it first).
    eject_seconds: float = 10.0
    # Log level: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    # Log format: 'plain' lines, or 'json' (one object per line, with each request's fields).
    log_format: str = "plain"

    def __post_init__(self) -> None:
        self.check_registry(("local", "consul"))
        check_logging(self.log_level, self.log_format)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.connect_timeout <= 0 or self.upstream_timeout <= 0:
            raise ValueError("connect_timeout and upstream_timeout must be above 0 seconds")
        if self.retries < 0 or self.retry_body_bytes < 0 or self.eject_seconds < 0:
            raise ValueError("retries, retry_body_bytes and eject_seconds must not be negative")
