"""Non-maximum suppression, per class, vectorised with numpy."""

from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int | None = None) -> np.ndarray:
    """Indices of the boxes (x1, y1, x2, y2) kept, best score first; at most ``limit`` of them."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    limit = len(order) if limit is None else limit
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, limit: int | None = None
) -> np.ndarray:
    """Per-class NMS in one pass: boxes of different classes are shifted apart so they never overlap."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = classes.astype(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1.0)
    return nms(boxes + offsets, scores, iou_threshold, limit)
