"""What every output decoder is: outputs of one image in, predictions out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One thing found: a class, its score, and for detectors a box in model space (x1, y1, x2, y2, 0..1)."""

    class_id: int
    score: float
    box: tuple[float, float, float, float] | None = None


class Decoder(ABC):
    """Turns one image's engine outputs into predictions, best first."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = dict(options)

    @abstractmethod
    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        """Predictions scoring at least ``threshold``, at most ``top_k`` of them, sorted by score."""

    def option(self, key: str, default: Any) -> Any:
        """A decoder option from the model config, or its default."""
        return self.options.pop(key, default)

    def check_options(self) -> None:
        """Refuse options this decoder does not know (a typo must not be silently ignored)."""
        if self.options:
            raise ValueError(f"unknown option(s) {', '.join(sorted(self.options))}")


def pick_output(outputs: dict[str, np.ndarray], name: str | None, index: int) -> np.ndarray:
    """The output called ``name``, or the ``index``-th one when no name is configured."""
    if name is not None:
        if name not in outputs:
            raise KeyError(f"the model has no output {name!r} (it has {', '.join(outputs)})")
        return outputs[name]
    return list(outputs.values())[index]
