"""What every output decoder is: outputs of one image in, predictions (or an embedding) out.

Coordinates a decoder returns are in the model's input space, normalised to 0..1 (x by the input's
width, y by its height); the pipeline maps them through the preprocessing's frame to the picture's pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Shapes = Mapping[str, tuple[int, ...]]  # each output's shape for one image (no batch axis)


@dataclass(frozen=True)
class MaskPatch:
    """An instance mask over a rectangle of the model input: ``bits[y, x]`` covers input pixel
    (left + x, top + y)."""

    left: int
    top: int
    bits: np.ndarray  # bool, (height, width)


@dataclass(frozen=True)
class Prediction:
    """One thing found: a class and its score; for detectors a box (x1, y1, x2, y2, 0..1 in model space),
    for segmentation its mask, for pose its keypoints (K, 3): x, y (0..1 in model space) and a score."""

    class_id: int
    score: float
    box: tuple[float, float, float, float] | None = None
    mask: MaskPatch | None = None
    keypoints: np.ndarray | None = None


class Decoder(ABC):
    """Turns one image's engine outputs into predictions, best first."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        self.options = dict(options)
        self.input_width, self.input_height = input_size

    @abstractmethod
    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        """Predictions scoring at least ``threshold``, at most ``top_k`` of them, sorted by score."""

    def embed(self, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The image's feature vector, for encoders; None for every other decoder."""
        return None

    def check(self, shapes: Shapes, classes: int) -> None:  # noqa: B027 - a decoder that reads any shape has none
        """Refuse outputs this decoder cannot read (ValueError naming the output, the shape found and the
        shape expected); ``classes`` is the label count (0: no labels file)."""

    def describe(self) -> dict[str, Any]:
        """What /models says of the decoder's answers beyond the task (keypoint names, embedding size)."""
        return {}

    def option(self, key: str, default: Any) -> Any:
        """A decoder option from the model config, or its default."""
        return self.options.pop(key, default)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        """A decoder option that must be one of ``choices``."""
        value = self.option(key, default)
        if value not in choices:
            raise ValueError(f"option {key!r} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return str(value)

    def check_options(self) -> None:
        """Refuse options this decoder does not know (a typo must not be silently ignored)."""
        if self.options:
            raise ValueError(f"unknown option(s) {', '.join(sorted(self.options))}")


def pick_output(outputs: Mapping[str, Any], name: str | None, index: int) -> Any:
    """The output called ``name``, or the ``index``-th one when no name is configured."""
    if name is not None:
        if name not in outputs:
            raise KeyError(f"the model has no output {name!r} (it has {', '.join(outputs)})")
        return outputs[name]
    values = list(outputs.values())
    if index >= len(values):
        raise KeyError(f"the model has {len(values)} output(s) ({', '.join(outputs)}); this decoder needs more")
    return values[index]


def shape_of(value: Any) -> tuple[int, ...]:
    """An output's shape, from the array or from a shape (what check() is given) alike."""
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def shape_error(output: str, found: tuple[int, ...], expected: str) -> ValueError:
    """The one way a decoder says an output does not fit: its name, the shape found, the shape expected."""
    return ValueError(f"output {output!r} has shape {list(found)} (per image), expected {expected}")


def output_name(outputs: Mapping[str, Any], name: str | None, index: int) -> str:
    """The name of the output ``pick_output`` would take."""
    if name is not None:
        pick_output(outputs, name, index)
        return name
    names = list(outputs)
    pick_output(outputs, None, index)
    return names[index]
