"""Every task's answer as the client's types, in JSON lines and drawn by --draw."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from visionpool.client import Mask, Result
from visionpool.client.draw import MASK_ALPHA, annotate, class_colour

SEGMENTED = {
    "model": {"name": "seg", "version": "1"},
    "image": {"width": 200, "height": 100},
    "predictions": [
        {"label": "cat", "class_id": 2, "score": 0.9, "box": {"x": 20, "y": 10, "width": 100, "height": 80},
         "mask": {"polygons": [[30, 20, 110, 20, 110, 80, 30, 80]]}},
    ],
    "timing_ms": {"total": 3.0},
}  # fmt: skip


def keypoints(score: float = 0.9) -> list[list[float]]:
    points = [[100.0, 20.0 + 4 * i, score] for i in range(17)]
    points[15], points[16] = [80.0, 90.0, score], [120.0, 90.0, 0.1]  # the right ankle hidden
    return points


def test_every_task_reads_into_the_types_and_back_into_json_lines() -> None:
    result = Result.from_json(SEGMENTED, {})
    assert result.predictions[0].mask == Mask([[30, 20, 110, 20, 110, 80, 30, 80]])
    assert result.to_json()["predictions"][0]["mask"] == {"polygons": [[30, 20, 110, 20, 110, 80, 30, 80]], "png": None}
    pose = {**SEGMENTED, "predictions": [{"label": "person", "class_id": 0, "score": 0.8, "keypoints": keypoints()}]}
    found = Result.from_json(pose, {}).predictions[0]
    assert found.keypoints[16] == (120.0, 90.0, 0.1) and found.box is None and found.mask is None
    assert "box" not in Result.from_json(pose, {}).to_json()["predictions"][0]
    embedded = Result.from_json({**SEGMENTED, "predictions": [], "embedding": [0.6, 0.8]}, {})
    assert embedded.embedding == [0.6, 0.8] and embedded.to_json()["embedding"] == [0.6, 0.8]
    assert "embedding" not in result.to_json()


def test_a_png_mask_stays_base64_in_json_lines() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.ones((80, 100), bool)).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    body = {**SEGMENTED, "predictions": [{**SEGMENTED["predictions"][0], "mask": {"png": encoded}}]}
    result = Result.from_json(body, {})
    assert result.predictions[0].mask.png == buffer.getvalue()
    assert result.to_json()["predictions"][0]["mask"] == {"png": encoded}


def drawn(tmp_path: Path, body: dict) -> np.ndarray:
    source = tmp_path / "grey.png"
    Image.new("RGB", (200, 100), (128, 128, 128)).save(source)
    return np.asarray(Image.open(annotate(source, Result.from_json(body, {}), tmp_path / "out.png")).convert("RGB"))


def tinted(pixel: np.ndarray, class_id: int) -> bool:
    """Whether a grey pixel was mixed with the class's colour at the mask's alpha."""
    expected = np.round(np.array(class_colour(class_id)) * MASK_ALPHA / 255 + 128 * (1 - MASK_ALPHA / 255))
    return bool(np.abs(pixel.astype(int) - expected).max() <= 2)


def test_draw_fills_polygon_masks_in_the_class_colour(tmp_path: Path) -> None:
    pixels = drawn(tmp_path, SEGMENTED)
    assert tinted(pixels[50, 70], 2)  # inside the polygon
    assert (pixels[50, 170] == 128).all()  # outside the box and the mask


def test_draw_fills_png_masks_over_their_box(tmp_path: Path) -> None:
    bits = np.zeros((80, 100), bool)
    bits[:, 50:] = True  # the right half of the box
    buffer = io.BytesIO()
    Image.fromarray(bits).save(buffer, format="PNG")
    mask = {"png": base64.b64encode(buffer.getvalue()).decode()}
    pixels = drawn(tmp_path, {**SEGMENTED, "predictions": [{**SEGMENTED["predictions"][0], "mask": mask}]})
    assert tinted(pixels[50, 100], 2) and (pixels[50, 50] == 128).all()  # box x 20..120: mask from x 70


def test_draw_joins_keypoints_seen_with_the_skeleton(tmp_path: Path) -> None:
    pose = {**SEGMENTED, "predictions": [{"label": "person", "class_id": 0, "score": 0.8, "keypoints": keypoints()}]}
    pixels = drawn(tmp_path, pose)
    assert (pixels[90, 80] == 255).all()  # the left ankle's dot
    assert (pixels[90, 120] == 128).all()  # the right ankle scores 0.1: not drawn
    assert (pixels[90, 100] == 128).all()  # no bone between the ankles in COCO's skeleton
    colour = np.array(class_colour(0))
    left_knee, left_ankle = keypoints()[13], keypoints()[15]  # bone 15-13
    middle = [round((left_knee[1] + left_ankle[1]) / 2), round((left_knee[0] + left_ankle[0]) / 2)]
    assert np.abs(pixels[middle[0], middle[1]].astype(int) - colour).max() <= 2
