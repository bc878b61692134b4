"""What every engine is: a loaded model that runs a batch."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Engine(ABC):
    """A model loaded on a device. ``run`` is called from one thread at a time."""

    device: str = "cpu"  # where it runs, for /models
    max_batch_size: int = 1  # the most images one ``run`` takes (1 when the model has a fixed batch of 1)

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Run a batch (leading axis = images); return each image's outputs by name."""

    def close(self) -> None:  # noqa: B027 - optional: most engines hold nothing to release by hand
        """Release what the engine holds."""


def split_batch(outputs: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """Per-image views of outputs whose leading axis is the batch."""
    return [{name: value[i] for name, value in outputs.items()} for i in range(count)]
