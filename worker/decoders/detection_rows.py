"""Final detection rows ``[image_id, class_id, score, x1, y1, x2, y2]`` (OpenCV DNN's DetectionOutput)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Decoder, Prediction, pick_output


class DetectionRowsDecoder(Decoder):
    """Rows already passed through NMS by the graph: filter, sort and cut to top_k."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.output = self.option("output", None)
        self.check_options()

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        rows = pick_output(outputs, self.output, 0).reshape(-1, 7)
        rows = rows[rows[:, 2] >= threshold]
        rows = rows[np.argsort(-rows[:, 2], kind="stable")][:top_k]
        return [Prediction(int(r[1]), float(r[2]), (float(r[3]), float(r[4]), float(r[5]), float(r[6]))) for r in rows]
