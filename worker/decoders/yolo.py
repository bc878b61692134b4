"""YOLO heads as Ultralytics exports them -> boxes, with class-aware NMS here.

Layouts, per image (the batch axis is gone), told apart by shape or forced with ``version``:
    v8 / v11 (anchor-free, no objectness): [4 + C + E, A]  rows cx, cy, w, h, C class scores, E extra
    v5 / v7 (with objectness):             [A, 5 + C + E]  columns cx, cy, w, h, objectness, C scores, E extra
E is 0 for detection, the mask coefficients for ``yolo-seg``, the keypoints for ``yolo-pose``. With a labels
file C must be its line count; without one, the smaller axis holds the channels (v8 first, v5 last).
Boxes are in input pixels (``normalized = true``: 0..1). Post-processing follows Ultralytics'
``ops.non_max_suppression``: one class per anchor (its best), a cap on candidates, class-aware NMS by
offsetting each class's boxes (``agnostic = true``: across classes), then the best ``top_k``.

Options: output, version ("auto", "v8", "v5"), nms_iou (0.7), agnostic (false), normalized (false),
max_candidates (30000).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Decoder, Prediction, Shapes, output_name, pick_output, shape_error
from .nms import batched_nms, nms

VERSIONS = ("auto", "v8", "v5")


@dataclass(frozen=True)
class Layout:
    """How one YOLO output is laid out."""

    version: str  # "v8" (no objectness) or "v5" (objectness)
    channels_first: bool  # [channels, anchors] rather than [anchors, channels]
    classes: int
    extra: int  # mask coefficients or keypoint values after the class scores


@dataclass(frozen=True)
class Candidates:
    """What survives threshold and NMS, best first: boxes (x1, y1, x2, y2, 0..1), scores, classes, extra."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    extra: np.ndarray  # (n, E)


class YoloHead(Decoder):
    """What the YOLO decoders share: reading the head's layout and its candidates."""

    name = "yolo"

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.output = self.option("output", None)
        self.version = self.choice("version", "auto", VERSIONS)
        self.iou = float(self.option("nms_iou", 0.7))
        self.agnostic = bool(self.option("agnostic", False))
        self.normalized = bool(self.option("normalized", False))
        self.max_candidates = int(self.option("max_candidates", 30_000))
        self.classes = 0  # the labels file's line count, told by check(); 0 = read C from the shape
        self.layouts: dict[tuple[tuple[int, ...], int], Layout] = {}
        scale = (1.0, 1.0) if self.normalized else (float(self.input_width), float(self.input_height))
        self.scale = np.asarray(scale * 2, np.float32)

    def layout(self, shape: tuple[int, ...], extra: int, output: str = "output") -> Layout:
        """The layout of an output of this shape (worked out once per shape)."""
        key = (tuple(shape), extra)
        if key not in self.layouts:
            self.layouts[key] = self._resolve(tuple(shape), extra, output)
        return self.layouts[key]

    def _resolve(self, shape: tuple[int, ...], extra: int, output: str) -> Layout:
        versions = ("v8", "v5") if self.version == "auto" else (self.version,)
        if len(shape) == 2 and self.classes:
            # as exported: v8 channels first, v5 anchors first; then a transposed v8; any orientation when forced
            forms = (
                [("v8", True), ("v5", False), ("v8", False)]
                if self.version == "auto"
                else [(self.version, True), (self.version, False)]
            )
            for version, channels_first in forms:
                fixed = 4 + extra + (version == "v5")
                if shape[0 if channels_first else 1] == fixed + self.classes:
                    return Layout(version, channels_first, self.classes, extra)
        elif len(shape) == 2:
            channels_first = shape[0] < shape[1]
            version = ("v8" if channels_first else "v5") if self.version == "auto" else self.version
            classes = min(shape) - 4 - extra - (version == "v5")
            if classes >= 1:
                return Layout(version, channels_first, classes, extra)
        raise shape_error(output, shape, self._expected(extra, versions))

    def _expected(self, extra: int, versions: tuple[str, ...]) -> str:
        c = str(self.classes) if self.classes else "C"
        forms = {"v8": f"[{_sum(4, extra, c)}, A] (YOLOv8/11)", "v5": f"[A, {_sum(5, extra, c)}] (YOLOv5/7)"}
        said = " or ".join(forms[v] for v in versions)
        where = f" for the {self.classes} classes of the labels file" if self.classes else ""
        return f"{said}{where}{self._extra_words(extra)}"

    def _extra_words(self, extra: int) -> str:
        return ""

    def candidates(self, data: np.ndarray, layout: Layout, threshold: float, top_k: int) -> Candidates:
        """Best class per anchor, threshold, cap, NMS, the best ``top_k``; vectorised, no loop over anchors."""
        data = data if layout.channels_first else data.T
        c = layout.classes
        if layout.version == "v8":
            scores_all = data[4 : 4 + c]
            best = scores_all.max(axis=0)
            index = np.flatnonzero(best >= threshold)
            index = self._cap(index, best[index])
            classes = scores_all[:, index].argmax(axis=0)
            scores = best[index]
            first = 4 + c
        else:
            objectness = data[4]
            index = np.flatnonzero(objectness >= threshold)  # a score is objectness x class: never above it
            scored = data[5 : 5 + c, index] * objectness[index]
            classes = scored.argmax(axis=0)
            scores = scored[classes, np.arange(index.size)]
            kept = scores >= threshold
            index, classes, scores = index[kept], classes[kept], scores[kept]
            order = self._cap(np.arange(index.size), scores)
            index, classes, scores = index[order], classes[order], scores[order]
            first = 5 + c
        cx, cy, w, h = data[0:4, index]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) / self.scale
        if self.agnostic:
            keep = nms(boxes, scores, self.iou, top_k)
        else:
            keep = batched_nms(boxes, scores, classes, self.iou, top_k)
        extra = data[first : first + layout.extra, index[keep]].T
        return Candidates(boxes[keep], scores[keep], classes[keep], extra)

    def _cap(self, index: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The ``max_candidates`` best of ``index`` (all of them when fewer)."""
        if index.size <= self.max_candidates:
            return index
        return index[np.argpartition(-scores, self.max_candidates)[: self.max_candidates]]

    def predictions(self, found: Candidates) -> list[Prediction]:
        return [
            Prediction(c, s, (b[0], b[1], b[2], b[3]))
            for c, s, b in zip(found.classes.tolist(), found.scores.tolist(), found.boxes.tolist(), strict=True)
        ]


class YoloDecoder(YoloHead):
    """YOLO detection (v5, v7, v8, v11): boxes and classes."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.check_options()

    def check(self, shapes: Shapes, classes: int) -> None:
        self.classes = classes
        name = output_name(shapes, self.output, 0)
        self.layout(shapes[name], 0, name)

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        data = pick_output(outputs, self.output, 0)
        return self.predictions(self.candidates(data, self.layout(data.shape, 0), threshold, top_k))


def _sum(fixed: int, extra: int, classes: str) -> str:
    """'84', or '4+C', or '4+C+32': the channel count as the user can check it."""
    if classes.isdigit():
        return str(fixed + extra + int(classes))
    return f"{fixed}+C" + (f"+{extra}" if extra else "")
