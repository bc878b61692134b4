"""Drawing predictions on a copy of the image: a box, a label and a score per object; masks filled in the
class's colour, keypoints as dots joined by the skeleton (COCO's, for 17 keypoints).

Usage:
    annotate("cat.jpg", result, "out/cat.jpg")
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .types import Box, Prediction, Result
from .wire import COCO_KEYPOINTS, COCO_SKELETON

GOLDEN = 0.618033988749895


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A saturated colour per class, spread around the hue circle, readable under white text."""
    r, g, b = colorsys.hsv_to_rgb((class_id * GOLDEN) % 1.0, 0.85, 0.85)
    return round(r * 255), round(g * 255), round(b * 255)


def annotate(source: str | Path, result: Result, target: str | Path) -> Path:
    """Write a copy of ``source`` (as displayed, EXIF applied) with ``result``'s boxes drawn on it."""
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    image = _fill_masks(image, result.predictions)
    draw = ImageDraw.Draw(image)
    width = max(3, round(min(image.size) / 150))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 30)))
    boxed = [p for p in result.predictions if p.box is not None]
    for prediction in boxed:
        draw.rectangle(_corners(prediction.box), outline=class_colour(prediction.class_id), width=width)  # type: ignore[arg-type]
    for prediction in result.predictions:
        if prediction.keypoints:
            _skeleton(draw, prediction.keypoints, class_colour(prediction.class_id), width)
    for prediction in sorted(boxed, key=lambda p: p.score):  # labels over every box; the best one on top
        text = f"{prediction.label} {prediction.score:.2f}"
        _label(draw, font, text, _corners(prediction.box), class_colour(prediction.class_id), image.size)  # type: ignore[arg-type]
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() in (".jpg", ".jpeg"):
        image.save(target, quality=92, subsampling=0)  # full-resolution colour keeps thin coloured lines crisp
    else:
        image.save(target)
    return target


MASK_ALPHA = 110  # of 255: the picture stays visible under the fill
KEYPOINT_SCORE = 0.5  # keypoints scoring less are not drawn (hidden or outside the picture), as Ultralytics does


def _fill_masks(image: Image.Image, predictions: list[Prediction]) -> Image.Image:
    """The picture with each mask filled, half-transparent, in its class's colour."""
    masked = [p for p in predictions if p.mask is not None]
    if not masked:
        return image
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for p in masked:
        fill = (*class_colour(p.class_id), MASK_ALPHA)
        for polygon in p.mask.polygons:  # type: ignore[union-attr]
            if len(polygon) >= 6:
                draw.polygon(polygon, fill=fill)
        if p.mask.png is not None and p.box is not None:  # type: ignore[union-attr]
            with Image.open(io.BytesIO(p.mask.png)) as bits:  # type: ignore[union-attr]
                stencil = bits.convert("L").point(lambda v: MASK_ALPHA if v else 0)
            layer = Image.new("RGBA", stencil.size, fill)
            layer.putalpha(stencil)
            overlay.alpha_composite(layer, (p.box.x, p.box.y))
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def _skeleton(
    draw: ImageDraw.ImageDraw, keypoints: list[tuple[float, float, float]], colour: tuple[int, int, int], width: int
) -> None:
    """Bones between keypoints both seen, then a dot per keypoint seen."""
    seen = [score >= KEYPOINT_SCORE for _, _, score in keypoints]
    bones = COCO_SKELETON if len(keypoints) == len(COCO_KEYPOINTS) else ()
    for a, b in bones:
        if seen[a] and seen[b]:
            draw.line([keypoints[a][:2], keypoints[b][:2]], fill=colour, width=max(width - 1, 2))
    radius = width + 1
    for (x, y, _), visible in zip(keypoints, seen, strict=True):
        if visible:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 255, 255), outline=colour)


def _corners(box: Box) -> tuple[int, int, int, int]:
    return box.x, box.y, box.x + box.width - 1, box.y + box.height - 1


def _label(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    text: str,
    corners: tuple[int, int, int, int],
    colour: tuple[int, int, int],
    size: tuple[int, int],
) -> None:
    """The label on a filled tab above the box, or just inside it at the top edge, never outside the picture."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tab_w, tab_h = right - left + 6, bottom - top + 4
    x = min(max(corners[0], 0), max(size[0] - tab_w, 0))
    y = corners[1] - tab_h if corners[1] - tab_h >= 0 else min(corners[1], max(size[1] - tab_h, 0))
    draw.rectangle((x, y, x + tab_w, y + tab_h), fill=colour)
    draw.text((x + 3 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)
