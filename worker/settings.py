"""The worker's settings: defaults here, then ``VISIONPOOL_*`` environment, then flags."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from visionpool.client.options import option
from visionpool.discovery.settings import ServiceSettings

from .repository import BUILTIN_REPOSITORY


@dataclass
class WorkerSettings(ServiceSettings):
    """Everything a worker process is told at start-up (the shared fields are ServiceSettings')."""

    REGISTRIES: ClassVar[tuple[str, ...]] = ("none", "local", "consul")
    DEFAULT_REGISTRY: ClassVar[str] = "none"

    models: list[str] = option(
        default_factory=lambda: ["coco-ssd"],
        help="Models to serve, by folder name in the repository; the first is the default for POST /predict.",
        flag="--model",
        nargs="+",
        metavar="NAME",
    )
    model_repository: Path = option(
        BUILTIN_REPOSITORY,
        "The model repository folder; the built-in one (holding the coco-ssd demo) when unset.",
        kind=Path,
        metavar="DIR",
    )
    advertise_host: str | None = option(
        None, "Host name or address clients and proxies reach this worker at (default: --host, or this machine's name)."
    )
    worker_id: str | None = option(
        None, "Name of this worker in the registry and in X-Worker-ID (default: advertised host:port)."
    )
    supervise: bool = option(
        False, "Restart the worker when it dies instead of exiting (for honcho, where one exit stops the whole pool)."
    )
    threads: int = option(32, "Request threads: requests in flight at once (decoding runs in them, in parallel).")
    max_image_pixels: int = option(
        40_000_000, "Largest image accepted, in pixels (width x height), checked before decoding."
    )
    request_timeout: float = option(30.0, "Seconds a request may wait for the engine before it is answered 504.")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model_repository = Path(self.model_repository)
        if not self.models:
            raise ValueError("models must name at least one model, e.g. --model coco-ssd")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models lists a model twice: {self.models}")
        for name in ("threads", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be above 0 seconds")

    def default_port(self) -> int:
        """honcho's $PORT when set, else 8000."""
        return int(os.environ.get("PORT", "8000"))

    def advertised_host(self) -> str:
        """The host others reach this worker at; never a wildcard address."""
        if self.advertise_host:
            return self.advertise_host
        if self.host in ("0.0.0.0", "::", ""):
            return socket.gethostname()
        return self.host
