"""Every kind of image a user may send decodes to the picture they see."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import encode
from PIL import Image, ImageOps

from visionpool.worker.errors import ImageTooLarge, InvalidImage
from visionpool.worker.imaging import decode_image, small_jpeg

LIMIT = 40_000_000


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def as_file(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


FORMATS = [
    pytest.param("JPEG", {"quality": 95}, 6.0, id="jpeg"),
    pytest.param("JPEG", {"quality": 95, "progressive": True}, 6.0, id="progressive-jpeg"),
    pytest.param("PNG", {}, 0.0, id="png"),
    pytest.param("WEBP", {"lossless": True}, 0.0, id="webp"),
    pytest.param("BMP", {}, 0.0, id="bmp"),
    pytest.param("TIFF", {}, 0.0, id="tiff"),
]


@pytest.mark.parametrize(("fmt", "params", "tolerance"), FORMATS)
def test_formats_decode_to_the_same_pixels(photos, fmt: str, params: dict, tolerance: float) -> None:
    cat = photos["chelsea"]
    decoded = decode_image(encode(cat, fmt, **params), max_pixels=LIMIT)
    assert (decoded.width, decoded.height) == (451, 300)
    assert decoded.pixels.shape == (300, 451, 3) and decoded.pixels.dtype == np.uint8
    assert mean_abs_diff(decoded.pixels, cat) <= tolerance + 0.5


MODES = [
    pytest.param(lambda im: im.convert("L"), "PNG", id="greyscale"),
    pytest.param(lambda im: im.convert("L"), "JPEG", id="greyscale-jpeg"),
    pytest.param(lambda im: im.convert("CMYK"), "JPEG", id="cmyk-jpeg"),
    pytest.param(lambda im: im.convert("RGBA"), "PNG", id="rgba"),
    pytest.param(lambda im: im.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", id="palette"),
    pytest.param(lambda im: im.convert("P", palette=Image.Palette.ADAPTIVE), "GIF", id="gif"),
    pytest.param(lambda im: Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG", id="16-bit"),
]


@pytest.mark.parametrize(("convert", "fmt"), MODES)
def test_colour_modes_come_out_rgb_and_look_alike(photos, convert, fmt: str) -> None:
    cat = photos["chelsea"]
    data = as_file(convert(Image.fromarray(cat)), fmt)
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.pixels.shape == (300, 451, 3)
    grey = np.asarray(Image.fromarray(cat).convert("L"), dtype=np.int16)
    # every mode keeps the picture: its brightness follows the original's closely
    assert np.corrcoef(decoded.pixels.mean(axis=2).ravel(), grey.ravel())[0, 1] > 0.95


def test_gif_first_frame(photos) -> None:
    frames = [Image.fromarray(photos["chelsea"]), Image.fromarray(255 - photos["chelsea"])]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), max_pixels=LIMIT)
    assert mean_abs_diff(decoded.pixels, photos["chelsea"]) < 20


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_what_viewers_show(photos, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photos["chelsea"], "JPEG", quality=95, exif=exif.tobytes())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data, max_pixels=LIMIT)
    assert (decoded.height, decoded.width) == shown.shape[:2]
    assert mean_abs_diff(decoded.pixels, shown) < 1.0


def test_an_xmp_orientation_is_honoured_as_viewers_do(photos) -> None:
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    data = encode(photos["chelsea"], "JPEG", quality=95, xmp=xmp)
    assert b"Exif" not in data  # the orientation is in the XMP alone
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data, max_pixels=LIMIT)
    assert (decoded.height, decoded.width) == shown.shape[:2] == (451, 300)  # turned a quarter, as viewers show it
    assert mean_abs_diff(decoded.pixels, shown) < 1.0


def test_orientation_is_read_where_pillow_reads_it(photos) -> None:
    """The segments before the first scan are walked by their lengths: an XMP orientation behind a comment that
    holds a scan's marker bytes still turns the picture; orientation marks after the picture change nothing."""
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    data = encode(photos["chelsea"], "JPEG", quality=95, xmp=xmp)
    comment = b"\xff\xda not a scan \xff\xda"
    data = data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data, max_pixels=LIMIT)
    assert (decoded.height, decoded.width) == shown.shape[:2] == (451, 300)
    assert mean_abs_diff(decoded.pixels, shown) < 1.0
    thumb = encode(np.asarray(Image.fromarray(photos["chelsea"]).resize((96, 96))), "JPEG")
    assert small_jpeg(thumb + b"Exif\x00\x00 tiff:Orientation", max_pixels=1_000_000)
    assert not small_jpeg(thumb[:2] + b"\xff\xfe\x00\x12tiff:Orientation" + thumb[2:], max_pixels=1_000_000)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_tiff_is_turned_once(photos, orientation: int) -> None:
    """Pillow turns a TIFF upright itself as it loads it: turning it again showed it a quarter or half too far."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    png = encode(photos["chelsea"], "PNG", exif=exif.tobytes())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(png))).convert("RGB"))
    decoded = decode_image(encode(photos["chelsea"], "TIFF", exif=exif.tobytes()), max_pixels=LIMIT)
    assert (decoded.height, decoded.width) == shown.shape[:2] and np.array_equal(decoded.pixels, shown)


def test_large_jpeg_decodes_reduced_but_reports_its_full_size(photos) -> None:
    big = np.asarray(Image.fromarray(photos["astronaut"]).resize((1920, 1080)))
    decoded = decode_image(encode(big, "JPEG"), max_pixels=LIMIT, min_size=(300, 300))
    assert (decoded.width, decoded.height) == (1920, 1080)
    assert decoded.pixels.shape == (540, 960, 3)  # halved: still covers 300x300; a quarter would not


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_pixel_limit_is_checked_before_decoding(photos, fmt: str) -> None:
    with pytest.raises(ImageTooLarge, match="451x300"):
        decode_image(encode(photos["chelsea"], fmt), max_pixels=100_000)


@pytest.mark.parametrize("exif", [False, True], ids=["plain", "exif"])
def test_a_truncated_jpeg_says_so(photos, exif: bool) -> None:
    params = {"exif": Image.Exif().tobytes()} if exif else {}
    data = encode(photos["chelsea"], "JPEG", **params)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


@pytest.mark.parametrize("data", [b"\xff\xd8\xff\xe0garbage", b"GIF89a", b"\x00" * 100, b"%PDF-1.4"])
def test_garbage_is_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(data, max_pixels=LIMIT)


def test_only_a_small_upright_jpeg_is_small(photos) -> None:
    """small_jpeg chooses what the event loop decodes itself: anything else keeps the request threads' path."""
    thumb = np.asarray(Image.fromarray(photos["chelsea"]).resize((96, 96)))
    upright = encode(thumb, "JPEG")
    assert small_jpeg(upright, max_pixels=1_000_000)
    assert small_jpeg(encode(thumb[:, :, 0], "JPEG"), max_pixels=1_000_000)  # greyscale
    exif = Image.Exif()
    exif[0x0112] = 6
    assert not small_jpeg(encode(thumb, "JPEG", exif=exif.tobytes()), max_pixels=1_000_000)  # to be turned
    assert not small_jpeg(encode(thumb, "PNG"), max_pixels=1_000_000)
    assert not small_jpeg(encode(np.zeros((200, 200, 3), np.uint8), "JPEG"), max_pixels=1_000_000)  # 40,000 px
    assert not small_jpeg(upright, max_pixels=96 * 96 - 1)  # over the worker's limit: refused on the other path
    assert not small_jpeg(upright[:30], max_pixels=1_000_000)  # not even a header
    assert not small_jpeg(upright + bytes(300_000), max_pixels=1_000_000)  # a small picture, a large body
