"""The worker's settings: defaults here, then ``VISIONPOOL_*`` environment, then flags."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from visionpool.serving.options import option
from visionpool.serving.settings import ServiceSettings

from .engines import EngineHints, host_cores
from .repository import BUILTIN_REPOSITORY


def default_cache_dir() -> Path:
    """The user's cache folder for visionpool (XDG_CACHE_HOME, else ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionpool"


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
    model_file: Path | None = option(
        None,
        "Serve this one model file (ONNX, OpenVINO IR, TensorFlow, TFLite, MXNet -symbol.json) with no repository: "
        "imported as visionpool import does, into the cache folder, instead of --model.",
        kind=Path,
        metavar="FILE",
    )
    save_config: Path | None = option(
        None, "With --model-file: also write the config it was served with to this file.", kind=Path, metavar="FILE"
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
    grpc_port: int | None = option(
        None, "Port for the Open Inference Protocol over gRPC (0: any free port); none when unset."
    )
    threads: int = option(32, "Request threads: requests run at once once their body is in (they decode in parallel).")
    front_processes: int = option(
        0,
        "Processes that take this worker's HTTP requests, decode, preprocess and answer, handing their images to "
        "this process's models through shared memory: Python on every core for one model (0: this process does "
        "it all).",
    )
    engine: str | None = option(
        None, "Serve every model with this engine instead of its config's (openvino, onnxruntime: e.g. for GPUs)."
    )
    device: str = option(
        "cpu",
        "Where the models run: cpu, or cuda:N for the N-th NVIDIA GPU (onnxruntime's CUDA or TensorRT provider; "
        "models configured for openvino are served by onnxruntime there). One worker per GPU.",
    )
    workers_per_host: int = option(
        1, "Workers on this machine: each takes its share of the cores for its engine (the Procfile passes it)."
    )
    engine_threads: int = option(0, "Engine threads for this worker; 0 = its share: the cores / --workers-per-host.")
    engine_streams: int = option(
        0, "Inference requests an engine runs in parallel (OpenVINO streams); 0 = up to 2 within its threads."
    )
    cache_dir: Path = option(
        default_factory=default_cache_dir,
        help="Where compiled models are kept (OpenVINO's cache), so that a restart is fast.",
        kind=Path,
        metavar="DIR",
    )
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
        self.cache_dir = Path(self.cache_dir)
        for name in ("threads", "max_image_pixels", "workers_per_host"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.front_processes < 0:
            raise ValueError(f"front_processes must be 0 (none) or more, got {self.front_processes}")
        if self.engine_threads < 0 or self.engine_streams < 0:
            raise ValueError("engine_threads and engine_streams must be 0 (automatic) or more")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be above 0 seconds")
        self.device = parse_device(self.device)
        if self.device != "cpu" and self.engine == "openvino":
            raise ValueError(
                f"device {self.device} is an NVIDIA GPU, and openvino runs on none: use --engine onnxruntime "
                "(or leave --engine out), or --device cpu"
            )

    def deadline(self, started: float, remaining: float | None = None) -> float:
        """When a request that started at ``started`` (monotonic) must be answered: --request-timeout, or the
        caller's own shorter deadline (gRPC's ``remaining`` seconds)."""
        return started + (self.request_timeout if remaining is None else min(self.request_timeout, remaining))

    def engine_for(self, configured: str) -> str:
        """The engine a model configured for ``configured`` is served by: --engine; on a GPU, onnxruntime for
        openvino (which runs on no NVIDIA GPU); else its config's."""
        if self.engine:
            return self.engine
        return "onnxruntime" if self.device != "cpu" and configured == "openvino" else configured

    def engine_hints(self) -> EngineHints:
        """This worker's share of the host, for its engines."""
        threads = self.engine_threads or max(1, host_cores() // self.workers_per_host)
        return EngineHints(threads=threads, streams=self.engine_streams, cache_dir=self.cache_dir, device=self.device)

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


def parse_device(device: str) -> str:
    """ "cpu" or "cuda:N" ("cuda" alone is "cuda:0"); ValueError naming the choices."""
    text = device.strip().lower()
    if text in ("cpu", "cuda"):
        return "cuda:0" if text == "cuda" else "cpu"
    kind, _, number = text.partition(":")
    if kind == "cuda" and number.isdigit():
        return f"cuda:{int(number)}"
    raise ValueError(f"device must be cpu or cuda:N (the N-th NVIDIA GPU, from 0), got {device!r}")
