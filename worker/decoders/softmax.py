"""Classifier logits (or probabilities; quantised u8 ones read as 0..255 for 0..1) -> the top-k classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Decoder, Prediction, Shapes, output_name, pick_output, shape_error


class SoftmaxDecoder(Decoder):
    """Softmax over the class axis (unless the model already did), then the best ``top_k``."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.output = self.option("output", None)
        self.apply_softmax = bool(self.option("apply_softmax", True))
        self.check_options()

    def check(self, shapes: Shapes, classes: int) -> None:
        name = output_name(shapes, self.output, 0)
        size = int(np.prod(shapes[name]))
        if classes and size != classes:
            raise shape_error(name, shapes[name], f"[{classes}] (one score per line of the labels file)")

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        raw = pick_output(outputs, self.output, 0)
        scores = raw.reshape(-1).astype(np.float64)
        if raw.dtype == np.uint8:  # a quantised model's probabilities (TFLite): 0..255 for 0..1
            scores /= 255.0
        elif self.apply_softmax:
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        top = best(scores, top_k)  # Python numbers at once: a numpy scalar costs more to index, compare and convert
        return [Prediction(i, s) for i, s in zip(top.tolist(), scores[top].tolist(), strict=True) if s >= threshold]


def best(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` highest scores, highest first, equal ones in index order: a stable sort's first
    ``k``, from a partition (linear) and a sort of those alone (a stable sort of 1,000 classes cost ~50 us)."""
    negative = -scores
    candidates = np.arange(len(negative))
    if 0 < k < len(negative):
        kth = np.partition(negative, k - 1)[k - 1]
        if not np.isnan(kth):  # a NaN (ranked last, as the sort ranks it) leaves every index a candidate
            candidates = np.flatnonzero(negative <= kth)
    return candidates[np.argsort(negative[candidates], kind="stable")][:k]
