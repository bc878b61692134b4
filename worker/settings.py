"""The worker's settings: defaults here, then ``VISIONPOOL_*`` environment, then flags."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from visionpool.discovery.settings import RegistrySettings, check_logging

from .repository import BUILTIN_REPOSITORY

MiB = 1024 * 1024


@dataclass
class WorkerSettings(RegistrySettings):
    """Everything a worker process is told at start-up."""

    # Registry to announce this worker in once it is ready: 'none', 'local' (the proxy's) or 'consul'.
    registry: str = "none"
    # The proxy holding the local registry.
    registry_url: str = "http://127.0.0.1:8080"
    # Host name or address clients and proxies reach this worker at (default: --host, or this machine's name).
    advertise_host: str | None = None
    # Name of this worker in the registry and in X-Worker-ID (default: advertised host:port).
    worker_id: str | None = None
    # Restart the worker when it dies instead of exiting (for honcho, where one exit stops the whole pool).
    supervise: bool = False
    # Models to serve, by folder name in the repository; the first is the default for POST /predict.
    models: list[str] = field(
        default_factory=lambda: ["coco-ssd"], metadata={"flag": "--model", "nargs": "+", "metavar": "NAME"}
    )
    # The model repository folder; the built-in one (holding the coco-ssd demo) when unset.
    model_repository: Path = field(default=BUILTIN_REPOSITORY, metadata={"type": Path, "metavar": "DIR"})
    # Address to listen on; 0.0.0.0 for every interface.
    host: str = "127.0.0.1"
    # Port to listen on; honcho's $PORT when VISIONPOOL_PORT is unset.
    port: int = field(default_factory=lambda: int(os.environ.get("PORT", "8000")))
    # Request threads: requests in flight at once (decoding runs in them, in parallel).
    threads: int = 32
    # Largest request body accepted, in bytes.
    max_body_bytes: int = 20 * MiB
    # Largest image accepted, in pixels (width x height), checked before decoding.
    max_image_pixels: int = 40_000_000
    # Seconds a request may wait for the engine before it is answered 504.
    request_timeout: float = 30.0
    # Seconds given to requests in flight to finish at shutdown.
    drain_timeout: float = 10.0
    # Log level: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    # Log format: 'plain' lines, or 'json' (one object per line, with each request's fields).
    log_format: str = "plain"

    def __post_init__(self) -> None:
        self.check_registry(("none", "local", "consul"))
        self.model_repository = Path(self.model_repository)
        if not self.models:
            raise ValueError("models must name at least one model, e.g. --model coco-ssd")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models lists a model twice: {self.models}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        for name in ("threads", "max_body_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.request_timeout <= 0 or self.drain_timeout < 0:
            raise ValueError("request_timeout must be above 0 and drain_timeout at least 0 (seconds)")
        check_logging(self.log_level, self.log_format)

    def advertised_host(self) -> str:
        """The host others reach this worker at; never a wildcard address."""
        if self.advertise_host:
            return self.advertise_host
        if self.host in ("0.0.0.0", "::", ""):
            return socket.gethostname()
        return self.host
