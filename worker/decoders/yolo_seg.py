"""YOLO instance segmentation (YOLOv8/11-seg, YOLOv5-seg) -> boxes with their masks.

Outputs, per image: the detection head ([4 + C + M, A], or v5's [A, 5 + C + M]: M mask coefficients
after the class scores) and the prototypes ([M, H/4, W/4]). Each kept box's mask is its coefficients
times the prototypes, as Ultralytics' ``ops.process_mask`` makes it, but computed over the box alone
(not the whole prototype plane), upsampled to the input's pixels, cut at sigmoid 0.5 and cropped to
the box. Options: those of ``yolo``, and ``masks_output`` (default: the output with three axes).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from .base import MaskPatch, Prediction, Shapes, shape_error, shape_of
from .yolo import YoloHead


class YoloSegDecoder(YoloHead):
    """Boxes and instance masks."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.masks_output = self.option("masks_output", None)
        self.check_options()

    def check(self, shapes: Shapes, classes: int) -> None:
        self.classes = classes
        head, protos = self._names(shapes)
        if len(shapes[protos]) != 3:
            raise shape_error(protos, shapes[protos], "[M, H/4, W/4] (mask prototypes)")
        self.layout(shapes[head], shapes[protos][0], head)

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        head, protos = (outputs[name] for name in self._names(outputs))
        found = self.candidates(head, self.layout(head.shape, protos.shape[0]), threshold, top_k)
        pixels = found.boxes * np.asarray([self.input_width, self.input_height] * 2, np.float32)
        return [
            Prediction(p.class_id, p.score, p.box, mask=instance_mask(protos, coefficients, box, self.input_size))
            for p, coefficients, box in zip(self.predictions(found), found.extra, pixels, strict=True)
        ]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_width, self.input_height

    def _names(self, outputs: Shapes | dict[str, np.ndarray]) -> tuple[str, str]:
        """The detection head's output and the prototypes' (by name, or: the one with three axes)."""
        names = list(outputs)
        if self.output is not None or self.masks_output is not None:
            head = self.output or next((n for n in names if n != self.masks_output), "")
            protos = self.masks_output or next((n for n in names if n != self.output), "")
        else:
            by_axes = {len(shape_of(outputs[n])): n for n in names}
            head, protos = by_axes.get(2, ""), by_axes.get(3, "")
        for name, what in ((head, "output"), (protos, "masks_output")):
            if name not in outputs:
                raise ValueError(
                    f"yolo-seg needs a detection head ([4+C+M, A]) and mask prototypes ([M, H/4, W/4]); the model's "
                    f"outputs are {', '.join(f'{n} {list(shape_of(outputs[n]))}' for n in names)}: name them with "
                    f"options output and masks_output ({what} {name or 'not found'})"
                )
        return head, protos

    def _extra_words(self, extra: int) -> str:
        return f" with {extra} mask coefficients (the prototypes' first axis)"


def instance_mask(
    protos: np.ndarray, coefficients: np.ndarray, box: np.ndarray, input_size: tuple[int, int]
) -> MaskPatch:
    """One object's mask over its box (input pixels): coefficients x the prototypes under the box only."""
    count, proto_h, proto_w = protos.shape
    width, height = input_size
    sx, sy = proto_w / width, proto_h / height
    x1, y1 = max(int(math.floor(box[0])), 0), max(int(math.floor(box[1])), 0)
    x2, y2 = min(int(math.ceil(box[2])), width), min(int(math.ceil(box[3])), height)
    if x2 <= x1 or y2 <= y1:
        return MaskPatch(x1, y1, np.zeros((0, 0), bool))
    # the prototype cells under the box, one more on each side so that upsampling has its neighbours
    px1, py1 = max(int(x1 * sx) - 1, 0), max(int(y1 * sy) - 1, 0)
    px2, py2 = min(int(math.ceil(x2 * sx)) + 1, proto_w), min(int(math.ceil(y2 * sy)) + 1, proto_h)
    weights = coefficients.astype(np.float32)
    if (px2 - px1) * 4 < proto_w:  # a narrow box: copying its columns out costs less than whole rows
        patch = (weights @ protos[:, py1:py2, px1:px2].reshape(count, -1)).reshape(py2 - py1, px2 - px1)
    else:  # whole prototype rows: a slice of rows reshapes without a copy
        patch = (weights @ protos[:, py1:py2].reshape(count, -1)).reshape(py2 - py1, proto_w)[:, px1:px2]
    # upsampled as Ultralytics does (bilinear, half-pixel centres): input pixel X sits at cell (X + 0.5) * sx - 0.5
    up_w, up_h = round((px2 - px1) / sx), round((py2 - py1) / sy)
    upsampled = cv2.resize(patch, (up_w, up_h), interpolation=cv2.INTER_LINEAR)
    left, top = round(px1 / sx), round(py1 / sy)
    bits = upsampled[y1 - top : y2 - top, x1 - left : x2 - left] > 0.0  # logit > 0 <=> sigmoid > 0.5
    return MaskPatch(x1, y1, bits)
