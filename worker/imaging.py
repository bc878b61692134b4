"""Turning request bytes into RGB pixels, safely and fast.

Usage:
    image = decode_image(body, max_pixels=40_000_000, min_size=(300, 300))

The header is read first, so an image over the pixel limit (a decompression
bomb) is refused before any pixel is decoded, and so is a body whose layout would
cost a decoder far more than its size warrants (layout.py). JPEGs are decoded by libjpeg-turbo
(simplejpeg) straight to the smallest power-of-two reduction that still covers the
model's input: a 1920x1080 photo for a 300x300 model never needs full resolution.
EXIF orientation is applied, so sizes and boxes are in the picture as displayed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from .errors import ImageTooLarge, InvalidImage
from .layout import MAX_EXIF_BYTES, check_layout

logger = logging.getLogger(__name__)

CONTENT_TYPES = {
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/gif": "GIF",
    "image/tiff": "TIFF",
    "application/octet-stream": None,  # any of the formats below, told by its bytes
}
OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # the only Pillow readers tried (an MPO is read as a JPEG;
# each other reader parses a body in Python before it can be refused: 20 MB of EPS lines took 10.9 s; an ICO decoded
# its PNG with no pixel limit)
EXIF_ORIENTATION = 0x0112
# how an EXIF block (APP1) starts, and how XMP (also read by Pillow) names the orientation: either before a JPEG's
# first scan sends it down Pillow's path
ORIENTATION_MARKS = (b"Exif\x00\x00", b"tiff:Orientation")
PLAIN_COLORSPACES = ("YCbCr", "RGB", "Gray")  # what libjpeg-turbo decodes as Pillow's RGB and L modes
SMALL_PIXELS = 128 * 128  # small_jpeg: a thumbnail, a crop, a camera's small frame
SMALL_BYTES = 256 * 1024  # and a body no longer than this (a small picture may carry a large profile or padding)
# Our own pixel limit (--max-image-pixels), checked on the header before any pixel is decoded, is the
# one that must fire, with its own message: Pillow's fixed one (~179 MP in Image.open) is switched off.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels (perhaps reduced) and the full size of the picture as displayed."""

    pixels: np.ndarray  # H x W x 3, uint8, RGB, C-contiguous
    width: int
    height: int


def decode_image(data: bytes, *, max_pixels: int, min_size: tuple[int, int] | None = None) -> DecodedImage:
    """Decode an image; a JPEG may come reduced, but never below ``min_size`` (width, height)."""
    header_end = check_layout(data)
    plain = _plain_jpeg(data, header_end, max_pixels, min_size) if header_end is not None else None
    if plain is not None:
        return plain
    image = _open(data, max_pixels)
    if image.format == "TIFF":  # Pillow turns a TIFF upright itself as it loads it, and drops its orientation
        _load(image)
    orientation = _orientation(image)
    width, height = image.size
    if image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L"):
        pixels = _decode_jpeg(data, width, height, min_size, orientation)
    else:  # CMYK and friends too: Pillow knows their quirks (Adobe inversion)
        pixels = _decode_pillow(image, min_size, orientation)
    pixels = np.ascontiguousarray(_orient(pixels, orientation))
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(pixels, width, height)


def _plain_jpeg(data: bytes, header_end: int, max_pixels: int, min_size: tuple[int, int] | None) -> DecodedImage | None:
    """A JPEG that says nothing of its orientation (so upright: a camera's frames, a browser's or OpenCV's
    encodings), its header read by libjpeg-turbo instead of Pillow's parser (0.02-0.03 CPU-ms a picture in Python,
    under the lock other requests wait on); None for anything else, which decode_image's other path then answers.
    InvalidImage for a corrupt one: the other path would only decode it a second time to say the same."""
    size = _header_size(data)
    if size is None or size[0] * size[1] > max_pixels or not _upright(data, header_end):
        return None
    return DecodedImage(_decode_jpeg(data, *size, min_size, 1), *size)


def small_jpeg(data: bytes, max_pixels: int) -> bool:
    """Whether ``data`` is a JPEG that _plain_jpeg takes, of at most SMALL_PIXELS: 0.04-0.13 CPU-ms to decode. A
    photo costs the header's read alone (a few us), not the scan of its body for orientation marks."""
    if len(data) > SMALL_BYTES:
        return False
    size = _header_size(data)
    if size is None or size[0] * size[1] > min(SMALL_PIXELS, max_pixels):
        return False
    try:
        header_end = check_layout(data)
    except InvalidImage:
        return False  # the request threads refuse it
    return header_end is not None and _upright(data, header_end)


def _upright(data: bytes, header_end: int) -> bool:
    """No EXIF block and no XMP orientation in the segments before the first scan (``check_layout``), the only ones
    Pillow reads: nothing to turn. A photo's compressed pixels (most of its bytes) are not searched."""
    return all(data.find(mark, 0, header_end) < 0 for mark in ORIENTATION_MARKS)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG whose header libjpeg-turbo reads as RGB or grey."""
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (width, height) if colorspace in PLAIN_COLORSPACES and width * height > 0 else None


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, OverflowError) as error:
        logger.debug("undecodable upload: %s", error)
        raise InvalidImage(
            "The body is not an image this worker can decode (JPEG, PNG, WebP, BMP, GIF or TIFF)."
        ) from None
    if len(image.info.get("exif") or b"") > MAX_EXIF_BYTES:  # Pillow makes an object of each number in it
        raise InvalidImage(f"The image's EXIF block is over {MAX_EXIF_BYTES >> 10} KB; cameras write at most 64.")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height:,} pixels; this worker accepts at most "
            f"{max_pixels:,}. Resize it before sending."
        )
    if width < 1 or height < 1:
        raise InvalidImage("The image has no pixels.")
    return image


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not cost the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _reduction(width: int, height: int, min_size: tuple[int, int] | None, orientation: int) -> int:
    """The largest power-of-two JPEG reduction (1, 2, 4, 8) that keeps the image over min_size."""
    if min_size is None:
        return 1
    need_w, need_h = min_size if orientation < 5 else (min_size[1], min_size[0])
    factor = 1
    while factor < 8 and width // (factor * 2) >= need_w and height // (factor * 2) >= need_h:
        factor *= 2
    return factor


def _decode_jpeg(
    data: bytes, width: int, height: int, min_size: tuple[int, int] | None, orientation: int
) -> np.ndarray:
    """An RGB or greyscale JPEG (as Pillow's header read saw it) through libjpeg-turbo, reduced."""
    factor = _reduction(width, height, min_size, orientation)
    try:
        return simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            strict=True,
            min_height=-(-height // factor),
            min_width=-(-width // factor),
        )
    except ValueError as error:
        raise InvalidImage(f"The JPEG is corrupt or truncated ({error}).") from None


def _decode_pillow(image: Image.Image, min_size: tuple[int, int] | None, orientation: int) -> np.ndarray:
    if image.format in ("JPEG", "MPO"):
        factor = _reduction(*image.size, min_size, orientation)
        image.draft("RGB", (-(-image.size[0] // factor), -(-image.size[1] // factor)))
    _load(image)
    with _corrupt_is_invalid():
        return _to_rgb(image)


def _load(image: Image.Image) -> None:
    """The first frame's pixels (once: loading again does nothing)."""
    with _corrupt_is_invalid():
        image.seek(0)
        image.load()


@contextlib.contextmanager
def _corrupt_is_invalid() -> Iterator[None]:
    """What Pillow raises on a broken picture, as InvalidImage."""
    try:
        yield
    except (OSError, SyntaxError, ValueError, EOFError, OverflowError) as error:
        raise InvalidImage(f"The image is corrupt or truncated ({error}).") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping at 255
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation, as Pillow's ImageOps.exif_transpose does."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return np.rot90(pixels, 2).transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels
