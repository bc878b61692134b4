"""YOLO pose (YOLOv8/11-pose) -> boxes with keypoints.

Output, per image: [4 + C + K*D, A] (v5-style heads: [A, 5 + C + K*D]), K keypoints of D values after
the class scores: x, y in input pixels and (D = 3) a visibility score, already a probability in
Ultralytics exports. Options: those of ``yolo``, and ``keypoints`` (17), ``keypoint_dims`` (3),
``keypoint_names`` and ``skeleton`` (pairs of keypoint indices; COCO's for 17 keypoints).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionpool.client.wire import COCO_KEYPOINTS, COCO_SKELETON

from .base import Prediction, Shapes, output_name, pick_output
from .yolo import YoloHead


class YoloPoseDecoder(YoloHead):
    """Boxes and keypoints (x, y, score) per object."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.keypoints = int(self.option("keypoints", 17))
        self.dims = int(self.option("keypoint_dims", 3))
        coco = self.keypoints == len(COCO_KEYPOINTS)
        self.names = [str(n) for n in self.option("keypoint_names", COCO_KEYPOINTS if coco else ())]
        self.skeleton = [(int(a), int(b)) for a, b in self.option("skeleton", COCO_SKELETON if coco else ())]
        if self.keypoints < 1 or self.dims not in (2, 3):
            raise ValueError(
                f"keypoints must be at least 1 and keypoint_dims 2 or 3, got {self.keypoints}, {self.dims}"
            )
        if self.names and len(self.names) != self.keypoints:
            raise ValueError(f"keypoint_names has {len(self.names)} names for {self.keypoints} keypoints")
        if any(not (0 <= i < self.keypoints) for pair in self.skeleton for i in pair):
            raise ValueError(f"skeleton joins keypoints outside 0..{self.keypoints - 1}")
        self.check_options()

    def check(self, shapes: Shapes, classes: int) -> None:
        self.classes = classes
        name = output_name(shapes, self.output, 0)
        self.layout(shapes[name], self.keypoints * self.dims, name)

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        data = pick_output(outputs, self.output, 0)
        found = self.candidates(data, self.layout(data.shape, self.keypoints * self.dims), threshold, top_k)
        points = found.extra.reshape(-1, self.keypoints, self.dims).astype(np.float32)
        xy = points[:, :, :2] / self.scale[:2]
        scores = points[:, :, 2:3] if self.dims == 3 else np.ones_like(points[:, :, :1])
        keypoints = np.concatenate([xy, scores], axis=2)
        return [
            Prediction(p.class_id, p.score, p.box, keypoints=k)
            for p, k in zip(self.predictions(found), keypoints, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        return {"keypoints": {"count": self.keypoints, "names": self.names, "skeleton": self.skeleton}}

    def _extra_words(self, extra: int) -> str:
        return f" with {self.keypoints} keypoints of {self.dims} values"
