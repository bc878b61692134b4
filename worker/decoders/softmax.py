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
        best = np.argsort(-scores, kind="stable")[:top_k]
        return [Prediction(int(i), float(scores[i])) for i in best if scores[i] >= threshold]
