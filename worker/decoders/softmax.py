"""Classifier logits (or probabilities) -> the top-k classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Decoder, Prediction, pick_output


class SoftmaxDecoder(Decoder):
    """Softmax over the class axis (unless the model already did), then the best ``top_k``."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.output = self.option("output", None)
        self.apply_softmax = bool(self.option("apply_softmax", True))
        self.check_options()

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        scores = pick_output(outputs, self.output, 0).reshape(-1).astype(np.float64)
        if self.apply_softmax:
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        best = np.argsort(-scores, kind="stable")[:top_k]
        return [Prediction(int(i), float(scores[i])) for i in best if scores[i] >= threshold]
