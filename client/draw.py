"""Drawing predictions on a copy of the image: a box, a label and a score per object.

Usage:
    annotate("cat.jpg", result, "out/cat.jpg")
"""

from __future__ import annotations

import colorsys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .types import Box, Result

GOLDEN = 0.618033988749895


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A saturated colour per class, spread around the hue circle, readable under white text."""
    r, g, b = colorsys.hsv_to_rgb((class_id * GOLDEN) % 1.0, 0.85, 0.85)
    return round(r * 255), round(g * 255), round(b * 255)


def annotate(source: str | Path, result: Result, target: str | Path) -> Path:
    """Write a copy of ``source`` (as displayed, EXIF applied) with ``result``'s boxes drawn on it."""
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(3, round(min(image.size) / 150))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 30)))
    boxed = [p for p in result.predictions if p.box is not None]
    for prediction in boxed:
        draw.rectangle(_corners(prediction.box), outline=class_colour(prediction.class_id), width=width)  # type: ignore[arg-type]
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
