"""Raw SSD outputs (box encodings per anchor + class logits) -> boxes, with anchors and NMS here.

The defaults are those of the TF Object Detection API's SSD MobileNet v2 COCO:
6 feature maps, scales 0.2..0.95, aspect ratios 1, 2, 1/2, 3, 1/3, box coder
scale factors (10, 10, 5, 5), sigmoid scores with background in column 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Decoder, Prediction, Shapes, output_name, pick_output, shape_error
from .nms import batched_nms


def ssd_anchors(
    feature_maps: list[int],
    min_scale: float,
    max_scale: float,
    aspect_ratios: list[float],
    reduce_lowest: bool = True,
) -> np.ndarray:
    """Anchors as (cy, cx, h, w), normalised, in the order the TF graph emits them."""
    layers = len(feature_maps)
    scales = [min_scale + (max_scale - min_scale) * i / (layers - 1) for i in range(layers)] + [1.0]
    anchors = []
    for layer, size in enumerate(feature_maps):
        if layer == 0 and reduce_lowest:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[layer], a) for a in aspect_ratios]
            specs.append((math.sqrt(scales[layer] * scales[layer + 1]), 1.0))
        for y in range(size):
            for x in range(size):
                for scale, aspect in specs:
                    root = math.sqrt(aspect)
                    anchors.append(((y + 0.5) / size, (x + 0.5) / size, scale / root, scale * root))
    return np.asarray(anchors, dtype=np.float32)


class SSDDecoder(Decoder):
    """Decodes box encodings against generated anchors, then per-class NMS."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.boxes_output = self.option("boxes_output", None)
        self.scores_output = self.option("scores_output", None)
        self.iou = float(self.option("nms_iou", 0.6))
        self.scale_factors = np.asarray(self.option("scale_factors", [10.0, 10.0, 5.0, 5.0]), np.float32)
        self.background = bool(self.option("background_class", True))
        self.anchors = ssd_anchors(
            self.option("feature_maps", [19, 10, 5, 3, 2, 1]),
            float(self.option("min_scale", 0.2)),
            float(self.option("max_scale", 0.95)),
            self.option("aspect_ratios", [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0]),
            bool(self.option("reduce_boxes_in_lowest_layer", True)),
        )
        self.check_options()

    def check(self, shapes: Shapes, classes: int) -> None:
        boxes, scores = output_name(shapes, self.boxes_output, 0), output_name(shapes, self.scores_output, 1)
        anchors = self.anchors.shape[0]
        if int(np.prod(shapes[boxes])) != anchors * 4 or shapes[boxes][-1] != 4:
            raise shape_error(boxes, shapes[boxes], f"[{anchors}, 1, 4] (box encodings for the {anchors} anchors)")
        width = int(np.prod(shapes[scores])) // anchors
        if shapes[scores][0] != anchors or width * anchors != int(np.prod(shapes[scores])):
            raise shape_error(scores, shapes[scores], f"[{anchors}, C] (class logits per anchor)")
        if classes and width != classes:
            raise shape_error(
                scores, shapes[scores], f"[{anchors}, {classes}] for the {classes} lines of the labels file"
            )

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        encodings = pick_output(outputs, self.boxes_output, 0).reshape(-1, 4)
        logits = pick_output(outputs, self.scores_output, 1).reshape(encodings.shape[0], -1)
        if encodings.shape[0] != self.anchors.shape[0]:
            raise ValueError(
                f"the model has {encodings.shape[0]} boxes but the decoder {self.anchors.shape[0]} anchors"
            )
        first = 1 if self.background else 0
        # sigmoid(x) >= t  <=>  x >= logit(t): threshold before computing any sigmoid
        cut = math.log(threshold / (1 - threshold)) if 0 < threshold < 1 else (-np.inf if threshold <= 0 else np.inf)
        anchor_idx, class_col = np.nonzero(logits[:, first:] >= cut)
        if anchor_idx.size == 0:
            return []
        scores = 1.0 / (1.0 + np.exp(-logits[anchor_idx, class_col + first]))
        boxes = self._boxes(encodings[anchor_idx], self.anchors[anchor_idx])
        keep = batched_nms(boxes, scores, class_col, self.iou)[:top_k]
        return [
            Prediction(int(class_col[i]) + first, float(scores[i]), tuple(float(v) for v in boxes[i]))  # type: ignore[arg-type]
            for i in keep
        ]

    def _boxes(self, encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        ty, tx, th, tw = (encodings / self.scale_factors).T
        cya, cxa, ha, wa = anchors.T
        cy, cx = ty * ha + cya, tx * wa + cxa
        h, w = np.exp(th) * ha, np.exp(tw) * wa
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
