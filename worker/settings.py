"""The worker's settings: defaults here, then ``VISIONPOOL_*`` environment, then flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .repository import BUILTIN_REPOSITORY

MiB = 1024 * 1024


@dataclass
class WorkerSettings:
    """Everything a worker process is told at start-up."""

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

    def __post_init__(self) -> None:
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
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
