"""What every engine is: a loaded model that runs a batch, and the share of the host it may use."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class EngineHints:
    """What a worker tells its engines: their device, their share of the host's cores, where to keep compiled models."""

    threads: int = 1  # engine threads: this worker's share of the cores
    streams: int = 0  # engines that run requests in parallel (OpenVINO): how many; 0 = as many as it likes
    cache_dir: Path | None = None  # compiled models (OpenVINO, TensorRT engines), so that a restart is fast
    device: str = "cpu"  # "cpu", or "cuda:N": the NVIDIA GPU this worker's engines run on

    def gpu(self) -> int | None:
        """The CUDA device number this worker runs on; None on the CPU."""
        return int(self.device.partition(":")[2]) if self.device.startswith("cuda:") else None


class Engine(ABC):
    """A model loaded on a device. ``run`` is called from up to ``parallel`` threads at once."""

    device: str = "cpu"  # where it runs, for /models
    precision: str = "f32"  # the precision in force, for /models
    max_batch_size: int = 1  # the most images one ``run`` takes (1 when the model has a fixed batch of 1)
    batch_limit: str = "the model's fixed batch axis"  # why max_batch_size is what it is, for /models and the log
    parallel: int = 1  # runs in flight at once (OpenVINO streams); the batcher gives it that many threads
    # whether a batch may wait (the config's max_queue_delay_ms) for images still being decoded: not on a CPU, where
    # the wait idles a run while the other cores decode, and batches pair up from the queue under load (docs/models.md)
    batch_waits: bool = True

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Run a batch (leading axis = images); return each image's outputs by name."""

    def details(self) -> dict[str, object]:
        """How the engine runs, for /models and the start-up log."""
        return {
            "device": self.device, "precision": self.precision, "parallel": self.parallel,
            "batch_waits": self.batch_waits,
        }  # fmt: skip

    def close(self) -> None:  # noqa: B027 - optional: most engines hold nothing to release by hand
        """Release what the engine holds."""


def split_batch(outputs: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """Per-image views of outputs whose leading axis is the batch."""
    return [{name: value[i] for name, value in outputs.items()} for i in range(count)]


def batch_axis(dimension: object) -> tuple[int, str]:
    """The most images a model input's batch axis takes, and why: its size when fixed, no limit when open."""
    if isinstance(dimension, int) and dimension > 0:
        return dimension, f"the model's batch axis is fixed at {dimension}"
    return 1_000_000, "the model's batch axis is open"
