"""From RGB pixels to one model input, and from model coordinates back to pixels.

Usage:
    width, height = smallest_picture(spec)            # how far a JPEG may be reduced while it decodes
    tensor, frame = preprocess(image.pixels, spec)
    x, y, w, h = frame.to_pixels(box, image.width, image.height)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .repository import InputSpec

INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
LETTERBOX_FILL = 114
LONG_PICTURE = 16  # a crop's scaled picture over this many model inputs is scaled only where the crop is


@dataclass(frozen=True)
class Frame:
    """Where the picture sits inside the model input, in normalised (0..1) coordinates."""

    left: float = 0.0
    top: float = 0.0
    width: float = 1.0
    height: float = 1.0

    def to_pixels(self, box: tuple[float, float, float, float], width: int, height: int) -> dict[str, int]:
        """A normalised (x1, y1, x2, y2) box in model space as integer pixels, clipped to the image."""
        x1, y1, x2, y2 = box  # plain floats: numpy costs more than the arithmetic for four numbers
        left = round(min(max((x1 - self.left) / self.width, 0.0), 1.0) * width)
        right = round(min(max((x2 - self.left) / self.width, 0.0), 1.0) * width)
        top = round(min(max((y1 - self.top) / self.height, 0.0), 1.0) * height)
        bottom = round(min(max((y2 - self.top) / self.height, 0.0), 1.0) * height)
        return {"x": left, "y": top, "width": max(right - left, 0), "height": max(bottom - top, 0)}

    @functools.lru_cache(maxsize=256)  # noqa: B019 - frames are small values; one image's points share one  # fmt: skip
    def affine(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) taking normalised model-space (x, y) to the picture's pixels: ``xy * scale + offset``
        (unclipped). Shared arrays: do not change them."""
        scale = np.asarray([width / self.width, height / self.height])
        offset = np.asarray([-self.left / self.width * width, -self.top / self.height * height])
        return scale, offset

    def points_to_pixels(self, points: np.ndarray, width: int, height: int) -> np.ndarray:
        """Normalised (x, y) points in model space, shape (n, 2), as pixels of the picture, clipped to it."""
        scale, offset = self.affine(width, height)
        return np.minimum(np.maximum(points * scale + offset, 0.0), (width, height))

    def pixels_to_model(self, xs: np.ndarray, ys: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Picture pixel coordinates as normalised model-space coordinates (the inverse of points_to_pixels)."""
        return xs / width * self.width + self.left, ys / height * self.height + self.top


def smallest_picture(spec: InputSpec) -> tuple[int, int]:
    """The smallest picture (width, height) the resize takes without scaling it up: the input, and for a crop its
    shorter side at resize_shorter, which the crop scales to before it cuts the input out (a 640x480 JPEG reduced to
    320x240 for EfficientNet-Lite0's 256 was scaled up again: its top score moved by up to 0.13 on real photos)."""
    shorter = (spec.resize_shorter or 0) if spec.resize == "crop" else 0
    return max(spec.width, shorter), max(spec.height, shorter)


def preprocess(pixels: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Frame]:
    """Resize, reorder and scale one image into the model's input layout (no batch axis)."""
    resized, frame = _resize(pixels, spec)
    if spec.layout == "NCHW":  # planes before the floats, the colour order in the same view: one copy does all three
        ordered = (resized[:, :, ::-1] if spec.color == "BGR" else resized).transpose(2, 0, 1)
    elif spec.color == "BGR":  # channels last, a copy from a reversed view took 2-3x as long as OpenCV's swap
        ordered = cv2.cvtColor(resized, cv2.COLOR_RGB2BGR)
    else:
        ordered = resized
    if spec.dtype != "float32":
        return np.ascontiguousarray(ordered), frame
    return _normalised(ordered, spec.mean, spec.std, planes=spec.layout == "NCHW"), frame


def _normalised(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], planes: bool) -> np.ndarray:
    """(pixels - mean) / std as a new C-ordered float32 array, changed in place, from pixels as planes (CHW) or
    channels last (HWC). Per image at 224x224 here: numpy broadcasting a per-channel array over
    the last axis (3 long) runs a 3-long inner loop, 0.64 CPU-ms; one mean and one std for every channel (most
    models) are scalars, 0.04 ms channels last, 0.09 for planes (most of it the copy that transposes); three
    different ones are a scalar per plane (the same 0.09: they took a float copy channels last and a float
    transposition before, 0.3 ms) or OpenCV's per-channel arithmetic channels last (0.06). The same float32
    operations, so the same values."""
    tensor = pixels.astype(np.float32, order="C")
    if len(set(mean)) == 1 and len(set(std)) == 1:
        if mean[0] != 0:
            tensor -= np.float32(mean[0])
        if std[0] != 1:
            tensor *= np.float32(1.0 / std[0])
        return tensor
    shift, scale = _normaliser(mean, std)
    if planes:
        for plane, plane_shift, plane_scale in zip(tensor, shift, scale, strict=True):
            plane -= plane_shift
            plane *= plane_scale
        return tensor
    cv2.subtract(tensor, (*shift.tolist(), 0.0), dst=tensor)
    cv2.multiply(tensor, (*scale.tolist(), 0.0), dst=tensor)
    return tensor


@functools.lru_cache(maxsize=64)
def _normaliser(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and 1/std as float32 arrays, made once per model."""
    return np.asarray(mean, np.float32), np.asarray([1.0 / s for s in std], np.float32)


def _resize(pixels: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Frame]:
    height, width = pixels.shape[:2]
    flag = INTERPOLATION[spec.interpolation]
    if spec.resize == "stretch":
        return cv2.resize(pixels, (spec.width, spec.height), interpolation=flag), Frame()
    if spec.resize == "letterbox":
        return _letterbox(pixels, spec, flag)
    scale = spec.resize_shorter / min(width, height)  # type: ignore[operator]
    new_w, new_h = max(round(width * scale), spec.width), max(round(height * scale), spec.height)
    left, top = (new_w - spec.width) // 2, (new_h - spec.height) // 2
    frame = Frame(-left / spec.width, -top / spec.height, new_w / spec.width, new_h / spec.height)
    if new_w * new_h > LONG_PICTURE * spec.width * spec.height:
        # a long strip (8192x2): scaling all of it for the middle the crop keeps would take a third of a second and
        # 800 MB (a 16384x1 one: 3 GB); the part of the picture under the crop is scaled straight to the input
        x0, y0 = min(int(left / scale), width - 1), min(int(top / scale), height - 1)
        x1, y1 = max(round((left + spec.width) / scale), x0 + 1), max(round((top + spec.height) / scale), y0 + 1)
        return cv2.resize(pixels[y0:y1, x0:x1], (spec.width, spec.height), interpolation=flag), frame
    resized = cv2.resize(pixels, (new_w, new_h), interpolation=flag)
    return resized[top : top + spec.height, left : left + spec.width], frame


def _letterbox(pixels: np.ndarray, spec: InputSpec, flag: int) -> tuple[np.ndarray, Frame]:
    height, width = pixels.shape[:2]
    scale = min(spec.width / width, spec.height / height)
    new_w, new_h = max(round(width * scale), 1), max(round(height * scale), 1)
    canvas = np.full((spec.height, spec.width, 3), LETTERBOX_FILL, dtype=np.uint8)
    left, top = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(pixels, (new_w, new_h), interpolation=flag)
    return canvas, Frame(left / spec.width, top / spec.height, new_w / spec.width, new_h / spec.height)
