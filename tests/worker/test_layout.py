"""Bodies whose layout would cost a decoder far more than their size warrants are refused before decoding; what
encoders write still decodes. Each bomb here is small: what is tested is the refusal and its reason (layout.py has
what each costs when it is not refused)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from helpers import encode, scan_bomb
from PIL import Image

from visionpool.worker.errors import InvalidImage
from visionpool.worker.imaging import decode_image, small_jpeg
from visionpool.worker.layout import MAX_RLE_BYTES, MAX_SCANS, MAX_SEGMENTS

LIMIT = 40_000_000


def png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def thumbnail(photos, fmt: str = "JPEG", **params: object) -> bytes:
    return encode(np.asarray(Image.fromarray(photos["chelsea"]).resize((96, 96))), fmt, **params)


def refused(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage, match=reason):
        decode_image(data, max_pixels=LIMIT)
    assert not small_jpeg(data, max_pixels=LIMIT)  # so the event loop never starts on it


def test_a_progressive_jpeg_with_more_scans_than_encoders_write_is_refused(photos) -> None:
    progressive = encode(photos["chelsea"], "JPEG", progressive=True)
    assert progressive.count(b"\xff\xda") > 1 and decode_image(progressive, max_pixels=LIMIT).width == 451
    assert small_jpeg(scan_bomb(0), max_pixels=LIMIT) and decode_image(scan_bomb(0), max_pixels=LIMIT).width == 96
    refused(scan_bomb(MAX_SCANS), "The JPEG has over 100 scans; encoders write up to about 10")


def test_a_sequential_jpeg_of_countless_one_component_scans_is_refused(photos) -> None:
    """Scans that each carry one component of a sequential frame: libjpeg-turbo takes any number."""
    baseline = thumbnail(photos)
    first = baseline.index(b"\xff\xda")
    one_component = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    refused(baseline[:first] + one_component * (MAX_SCANS + 1) + b"\xff\xd9", "has over 100 scans")
    assert decode_image(baseline, max_pixels=LIMIT).width == 96  # one scan of every component: never counted


def test_scans_are_counted_to_the_end_of_the_picture(photos) -> None:
    """A phone's motion photo carries its video after the picture: the bytes there are not scans."""
    progressive = encode(photos["chelsea"], "JPEG", progressive=True)
    trailer = b"\xff\xda\x00\x08" * 200 + np.random.default_rng(0).integers(0, 256, 100_000, np.uint8).tobytes()
    assert decode_image(progressive + trailer, max_pixels=LIMIT).width == 451


def test_arithmetic_coded_jpegs_are_refused() -> None:
    """Empty arithmetic-coded scans raise no warning, so no decoder stops them; browsers do not decode them."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + b"\x01" * 64
    sof = b"\xff\xc9" + struct.pack(">HBHHB", 17, 8, 2000, 2000, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    scans = b"".join(b"\xff\xda\x00\x08\x01" + bytes([1 + i % 3]) + b"\x00\x00\x3f\x00" for i in range(50))
    refused(b"\xff\xd8" + dqt + sof + scans + b"\xff\xd9", "Arithmetic-coded JPEGs are not supported")


def test_a_jpeg_header_that_never_ends_or_hides_its_frame_is_refused(photos) -> None:
    thumb = thumbnail(photos)
    padded = thumb[:2] + b"\xff\xfe\x00\x02" * (MAX_SEGMENTS // 2) + thumb[2:]
    assert decode_image(padded, max_pixels=LIMIT).width == 96 and small_jpeg(padded, max_pixels=LIMIT)
    refused(thumb[:2] + b"\xff\xfe\x00\x02" * MAX_SEGMENTS + thumb[2:], "over 1,000 segments before its pixels")
    filled = thumb[:2] + b"\xff" * 5000 + thumb[2:]  # fill bytes, which the standard allows before any marker
    assert decode_image(filled, max_pixels=LIMIT).width == 96
    refused(thumb[:2] + b"\xff" * 70_000 + thumb[2:], "over 65,536 fill bytes")
    # one stray byte, then countless empty comments: Pillow skips the byte and parses every comment
    refused(thumb[:2] + b"\x00" + b"\xff\xfe\x00\x02" * 10 + thumb[2:], "stray bytes between its segments")
    # 0xFF 0x00 read as a segment with a length would jump over the frame header to a later scan marker
    refused(thumb[:2] + b"\xff\x00\x00\x10" + thumb[2:], r"malformed segment \(marker 0x00\)")


def test_a_png_cut_into_countless_chunks_is_refused(photos) -> None:
    png = encode(photos["chelsea"], "PNG")
    few = png[:33] + png_chunk(b"abCd") * 500 + png[33:-12] + png_chunk(b"tEXt", b"k\x00v") * 400 + png[-12:]
    assert decode_image(few, max_pixels=LIMIT).width == 451
    noise = encode(np.random.default_rng(0).integers(0, 256, (800, 1000, 3), np.uint8), "PNG")
    pixels, at = b"", 8
    while at < len(noise):  # the compressed pixels, from however many IDAT chunks Pillow wrote them in
        length, kind = struct.unpack_from(">I4s", noise, at)
        pixels += noise[at + 8 : at + 8 + length] if kind == b"IDAT" else b""
        at += 12 + length
    in_kb = [png_chunk(b"IDAT", pixels[i : i + 1024]) for i in range(0, len(pixels), 1024)]  # an encoder's small steps
    assert len(in_kb) > 2 * MAX_SEGMENTS
    assert decode_image(noise[:33] + b"".join(in_kb) + png_chunk(b"IEND"), max_pixels=LIMIT).width == 1000
    frames = [Image.fromarray(np.full((16, 16, 3), i % 256, np.uint8)) for i in range(3000)]
    animation = io.BytesIO()
    frames[0].save(animation, "PNG", save_all=True, append_images=frames[1:], duration=10)
    assert animation.getvalue().count(b"fcTL") == 3000  # Pillow reads an animation's chunks up to its second frame
    assert decode_image(animation.getvalue(), max_pixels=LIMIT).width == 16
    for at in (33, len(png) - 12):  # before the pixels, and between them and the end
        endless = png[:at] + png_chunk(b"abCd") * (MAX_SEGMENTS + len(png) // 1024 + 10) + png[at:]
        refused(endless, "The PNG is cut into over")


def test_a_png_of_countless_compressed_text_chunks_is_refused(photos) -> None:
    """Pillow inflates each (up to 1 MB), and one with a bad checksum does not count towards its own limit."""
    png = encode(photos["chelsea"], "PNG")
    bad = zlib.compress(b"\0" * 4096, 9)[:-4] + bytes(4)
    texts = png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a note")) * 5
    assert decode_image(png[:33] + texts + png[33:], max_pixels=LIMIT).width == 451
    refused(png[:33] + png_chunk(b"zTXt", b"k\x00\x00" + bad) * 101 + png[33:], "over 100 compressed text")


def test_a_gif_with_countless_pieces_before_its_picture_is_refused(photos) -> None:
    gif = encode(photos["chelsea"], "GIF")
    start = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)  # past the global palette
    comments = gif[:start] + b"\x21\xfe\x03abc\x00" * 500 + gif[start:]
    assert decode_image(comments, max_pixels=LIMIT).width == 451
    for pieces in (
        b"\x21\xfe\x00" * (MAX_SEGMENTS + 1),  # empty comments
        b"\x21\xfe" + b"\x01a" * 100_001 + b"\x00",  # one comment of countless blocks
        b"\x00" * (MAX_SEGMENTS + 1),  # stray bytes, which Pillow skips one at a time
        b"\x00" + b"\x21\xfe\x00" * (MAX_SEGMENTS + 1),
    ):
        refused(gif[:start] + pieces + gif[start:], "The GIF has over 1,000 extensions")


def tiff_of_strips(strips: int) -> bytes:
    """A 1-pixel-wide grey TIFF, uncompressed, one row per strip."""
    entries, data_at = 8, 8 + 2 + 8 * 12 + 4
    offsets_at, counts_at = data_at + 1, data_at + 1 + 4 * strips

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    directory = struct.pack("<H", entries) + b"".join([
        entry(256, 4, 1, 1), entry(257, 4, 1, strips), entry(258, 3, 1, 8), entry(259, 3, 1, 1), entry(262, 3, 1, 1),
        entry(273, 4, strips, offsets_at), entry(278, 4, 1, 1), entry(279, 3, strips, counts_at),
    ]) + b"\x00" * 4  # fmt: skip
    return b"II*\x00" + struct.pack("<I", 8) + directory + b"\x80" + struct.pack("<I", data_at) * strips + \
        struct.pack("<H", 1) * strips  # fmt: skip


def test_a_tiff_of_countless_strips_or_tags_is_refused(photos) -> None:
    assert decode_image(encode(photos["chelsea"], "TIFF"), max_pixels=LIMIT).width == 451
    assert decode_image(encode(photos["chelsea"], "TIFF", compression="tiff_lzw"), max_pixels=LIMIT).width == 451
    assert decode_image(tiff_of_strips(5000), max_pixels=LIMIT).height == 5000  # a scan's strip per row
    refused(tiff_of_strips(70_000), "The TIFF is cut into 70,000 strips or tiles")
    tags = [struct.pack("<HHQQ", 256, 3, 1, 64), struct.pack("<HHQQ", 257, 3, 1, 64)]
    tags += [struct.pack("<HHQQ", 1000 + i, 3, 1, 0) for i in range(MAX_SEGMENTS)]
    big = b"II" + struct.pack("<HHHQ", 43, 8, 0, 16) + struct.pack("<Q", len(tags)) + b"".join(tags) + bytes(8)
    refused(big, "The TIFF's directory has 1,002 tags")


def bmp_rle8(width: int, height: int, runs: bytes) -> bytes:
    palette = b"\x00\x00\x00\x00" * 256
    header = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(runs), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", header + len(runs), 0, 0, header) + info + palette + runs


def test_a_large_rle_bmp_is_refused() -> None:
    """Pillow decodes an RLE BMP's runs, and pads its rows, one by one in Python."""
    small = bmp_rle8(4, 2, b"\x04\x05\x00\x00\x04\x07\x00\x01")  # two rows of four, end of picture
    assert decode_image(small, max_pixels=LIMIT).width == 4
    refused(bmp_rle8(1000, 1000, b"\x01\x05" * (MAX_RLE_BYTES // 2) + b"\x00\x01"), "RLE-compressed BMP may be at most")
    refused(bmp_rle8(40000, 1000, b"\x01\x05\x00\x00" * 1000 + b"\x00\x01"), "RLE-compressed BMP may be at most")


@pytest.mark.parametrize("body", [
    pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n" + b"x\n" * 100_000, id="eps"),
    pytest.param(b"**\n" * 100_000, id="imt"),
    pytest.param(b"P6" + b" " * 100_000 + b"1 1 255\n\x00\x00\x00", id="ppm"),
    pytest.param(b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\x00" * 44
                 + struct.pack("<2I4s5I", 32, 0, b"\x00" * 4, 0, 0, 0, 0, 0) + b"\x00" * 84, id="dds"),
])  # fmt: skip
def test_no_other_reader_parses_a_body(body: bytes) -> None:
    """Pillow's other readers parse a body in Python before its format can be refused (20 MB of EPS lines: 10.9 s),
    or fail with errors of their own (a DDS: NotImplementedError, a 500)."""
    refused(body, "not an image this worker can decode")


def test_an_ico_is_not_opened(photos) -> None:
    """An ICO's reader decodes the PNG inside it while opening, with no pixel limit."""
    png = encode(photos["chelsea"], "PNG")
    ico = b"\x00\x00\x01\x00\x01\x00" + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png
    refused(ico, "not an image this worker can decode")


def tiff_entries(prefix: bytes, entries: list[tuple[int, int, int, int]], big: bool = False) -> bytes:
    """A TIFF of one directory (little-endian unless the prefix says otherwise), its values inline."""
    order = ">" if prefix[:2] == b"MM" else "<"
    head, count, entry = ("HHQ", "Q", "HHQQ") if big else ("I", "H", "HHII")
    first = struct.pack(order + head, *((8, 0, 16) if big else (8,)))
    return prefix + first + struct.pack(order + count, len(entries)) + b"".join(
        struct.pack(order + entry, *e) for e in entries
    )


def test_every_tiff_header_pillow_reads_is_checked() -> None:
    strips = tiff_of_strips(70_000)
    for prefix in (b"II\x00*", b"II*\x00"):  # both are little-endian TIFFs to Pillow
        refused(prefix + strips[4:], "cut into 70,000 strips")
    size = [(256, 4, 1, 1), (257, 4, 1, 1)]
    refused(tiff_entries(b"MM\x00+", [*size, (282, 5, 100_000, 8)]), "tag 282 holds 100,000 numbers")  # classic, BE
    refused(tiff_entries(b"II+\x00", [*size, (282, 5, 100_000, 16)], big=True), "tag 282 holds 100,000 numbers")
    exif_at = 16 + 8 + 3 * 20 + 8  # a BigTIFF's EXIF directory, past the first one, claiming 5,000 tags
    body = tiff_entries(b"II+\x00", [*size, (34665, 4, 1, exif_at)], big=True) + bytes(8) + struct.pack("<Q", 5000)
    refused(body, "directory has 5,000 tags")


def test_a_compressed_tiff_may_have_a_strip_per_row(photos) -> None:
    """libtiff reads compressed strips in one call: what libtiff writes by default (8 KB strips) decodes."""
    page = np.full((3000, 4000, 3), 255, np.uint8)
    page[::50] = 0
    data = encode(page, "TIFF", compression="tiff_adobe_deflate", strip_size=8192)
    assert len(Image.open(io.BytesIO(data)).tag_v2[273]) == 3000 and len(data) < 1_000_000  # strips, under a MB
    assert decode_image(data, max_pixels=LIMIT).width == 4000


def test_exif_blocks_pillow_parses_are_bounded(photos) -> None:
    """Pillow makes an object of each number in an EXIF block it reads for the orientation."""
    big = b"Exif\x00\x00" + bytes(300_000)
    small = Image.Exif()
    small[0x0112] = 1
    for fmt in ("PNG", "WEBP"):
        assert decode_image(encode(photos["chelsea"], fmt, exif=small.tobytes()), max_pixels=LIMIT).width == 451
        refused(encode(photos["chelsea"], fmt, exif=big), "EXIF block is over 256 KB")
    jpeg = thumbnail(photos, exif=small.tobytes())
    app1 = jpeg.index(b"\xff\xe1")
    segment = jpeg[app1 : app1 + 2 + int.from_bytes(jpeg[app1 + 2 : app1 + 4], "big")]
    assert decode_image(jpeg[:app1] + segment + jpeg[app1:], max_pixels=LIMIT).width == 96  # two: Pillow joins them
    refused(jpeg[:app1] + segment * 2 + jpeg[app1:], "no encoder writes so often or so long")


def test_jpeg_segments_pillow_parses_are_bounded(photos) -> None:
    """One frame header of its size, quantisation tables of theirs, a few Photoshop blocks: 300 of 64 KB each took
    Pillow 1-1.9 s."""
    jpeg = thumbnail(photos)
    sof = jpeg.index(b"\xff\xc0")
    frame = jpeg[sof : sof + 2 + int.from_bytes(jpeg[sof + 2 : sof + 4], "big")]
    refused(jpeg[:sof] + frame + jpeg[sof:], "no encoder writes so often or so long")  # two frame headers
    refused(jpeg[:2] + b"\xff\xdb" + struct.pack(">H", 1000) + bytes(998) + jpeg[2:], "so often or so long")
    photoshop = b"\xff\xed\x00\x12Photoshop 3.0\x00\x00\x00"
    assert decode_image(jpeg[:2] + photoshop * 16 + jpeg[2:], max_pixels=LIMIT).width == 96
    refused(jpeg[:2] + photoshop * 17 + jpeg[2:], "16 Photoshop blocks")


A_4X4_PAGE = [(256, 3, 1, 4), (257, 3, 1, 4), (273, 4, 1, 8), (279, 4, 1, 16)]  # size, one strip and its bytes


def test_exif_and_gps_directories_of_a_tiff_are_bounded_together() -> None:
    """Pillow reads them in full as it loads, once for each tag that points at them: 38 tags of 65,536 rationals
    shared by both took 7-11 s."""
    inner_at = 8 + 2 + 6 * 12 + 4
    top = tiff_entries(b"II*\x00", [*A_4X4_PAGE, (34665, 4, 1, inner_at), (34853, 4, 1, inner_at)]) + bytes(4)
    inner = struct.pack("<H", 3) + b"".join(struct.pack("<HHII", 0x9000 + i, 5, 20_000, 0) for i in range(3))
    refused(top + inner + bytes(4), "EXIF and GPS directories hold 120,000 numbers")


def test_an_offset_past_any_file_is_refused_not_a_500() -> None:
    """A BigTIFF's EXIF offset of 2^64 - 1: Pillow's seek overflows."""
    with pytest.raises(InvalidImage):
        decode_image(tiff_entries(b"II+\x00", [*A_4X4_PAGE, (34665, 16, 1, 2**64 - 1)], big=True) + bytes(64),
                     max_pixels=LIMIT)  # fmt: skip


def test_long_animations_and_geotiff_tie_points_decode(photos) -> None:
    frames = [Image.fromarray(np.full((32, 32, 3), i % 256, np.uint8)) for i in range(1200)]
    animation = io.BytesIO()
    frames[0].save(animation, "WEBP", save_all=True, append_images=frames[1:], duration=10, quality=10)
    assert decode_image(animation.getvalue(), max_pixels=LIMIT).width == 32  # 1,200 frames, under a KB each
    tiff = io.BytesIO()
    tags = {33922: tuple(float(i) for i in range(6 * 11_000))}  # 11,000 tie points (six numbers each)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiff, "TIFF", tiffinfo=tags)
    assert decode_image(tiff.getvalue(), max_pixels=LIMIT).width == 8
