"""Instance masks in the answer: polygons in the picture's pixels, or a PNG over the object's box.

Usage:
    found["mask"] = {"polygons": polygons(patch, frame, input_size, width, height)}
    found["mask"] = {"png": png(patch, frame, input_size, found["box"], width, height)}

A mask comes from the decoder as bits over a rectangle of the model input. Polygons are its outer
contours, simplified to within about a pixel of the model input (a few dozen points per object), each
a flat list x1, y1, x2, y2, ... as COCO writes segmentations. The PNG is a 1-bit image the size of the
object's pixel box, sampled from the bits at each picture pixel's centre.
"""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
from PIL import Image

from .decoders import MaskPatch
from .preprocess import Frame

MIN_AREA = 2.0  # further contours smaller than this (model-input pixels) are specks, not parts of the object


def polygons(mask: MaskPatch, frame: Frame, input_size: tuple[int, int], width: int, height: int) -> list[list[float]]:
    """The mask's outer contours as flat [x1, y1, x2, y2, ...] lists in the picture's pixels, largest first."""
    if mask.bits.size == 0:
        return []
    contours, _ = cv2.findContours(mask.bits.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) > 1:
        contours = sorted(contours, key=cv2.contourArea, reverse=True)
    corner = np.asarray([mask.left + 0.5, mask.top + 0.5])  # a contour runs through pixel centres
    found = []
    for rank, contour in enumerate(contours):
        if rank and cv2.contourArea(contour) < MIN_AREA:
            break
        epsilon = max(0.75, 0.004 * cv2.arcLength(contour, True))
        points = (cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2) + corner) / input_size
        found.append(np.round(frame.points_to_pixels(points, width, height), 1).ravel().tolist())
    return found


def png(
    mask: MaskPatch, frame: Frame, input_size: tuple[int, int], box: dict[str, int], width: int, height: int
) -> str:
    """The mask over ``box`` (the answer's pixel box) as a base64 1-bit PNG of the box's size."""
    bw, bh = max(box["width"], 1), max(box["height"], 1)
    xs, ys = frame.pixels_to_model(box["x"] + np.arange(bw) + 0.5, box["y"] + np.arange(bh) + 0.5, width, height)
    cols = np.floor(xs * input_size[0]).astype(np.int64) - mask.left
    rows = np.floor(ys * input_size[1]).astype(np.int64) - mask.top
    h, w = mask.bits.shape
    inside = (rows[:, None] >= 0) & (rows[:, None] < h) & (cols[None, :] >= 0) & (cols[None, :] < w)
    bits = np.zeros((bh, bw), bool)
    if h and w:
        bits = mask.bits[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]] & inside
    buffer = io.BytesIO()
    Image.fromarray(bits).save(buffer, format="PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
