"""A body's layout, read from its lengths and counts before any decoder parses it.

Usage:
    header_end = check_layout(body)  # InvalidImage, or where a JPEG's first scan starts (None: not a JPEG)

Pillow parses JPEG segments, PNG chunks, GIF blocks, TIFF directories and strips, EXIF numbers and BMP runs in
Python, a piece at a time, under the GIL; libjpeg-turbo makes a pass over every block of a JPEG for each of its scans,
empty or not. So a body of many empty pieces costs far more than its size warrants. Measured on this project's machine
(Xeon, one request): 5,000 empty scans (50 KB) on a 4-megapixel JPEG 3.8 s, 5,000 scans of one component each
(sequential, arithmetic-coded: no decoder complains) 19.7 s; 20 MB of empty JPEG comments 5 s, of empty PNG chunks
7 s, of corrupt compressed PNG text 13 s, of empty GIF extensions 2 s; 300,000 TIFF strips (1.8 MB) 1.9 s; 2.4
million EXIF rationals (20 MB) 5.6-6 s, or 38 tags of 65,536 shared by EXIF and GPS 7-11 s; 300 JPEG frame headers
of 64 KB 1.9 s; a 40000x1000 RLE BMP of 5 KB 5.7 s. Each is refused here, in microseconds to a few milliseconds,
with the reason; what real encoders write passes (cameras, phones, browsers, libpng, giflib, libtiff, libwebp: a few
to a few dozen pieces). imaging.py lets no other Pillow reader open a body, and checks the EXIF block a reader found.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from .errors import InvalidImage

MAX_SEGMENTS = 1000  # JPEG segments, PNG chunks, GIF extensions, TIFF tags (cameras write 10-50; a 20 MB XMP in 64 KB
# blocks, 320)
PIECE_BYTES = 1024  # and, for PNG chunks, one more per this many bytes of body (libpng writes 8 KB)
MAX_SCANS = 100  # a JPEG's scans: encoders write 1-10 (progressive), cjpeg's scan scripts allow at most 100
MAX_GIF_BLOCKS = 100_000  # the data blocks (at most 255 bytes each) of a GIF's extensions before its picture
MAX_PNG_COMPRESSED = 100  # zTXt, iTXt and iCCP chunks: Pillow inflates each (up to 1 MB); encoders write a few
MAX_FILL_BYTES = 1 << 16  # 0xFF bytes before a JPEG marker (allowed, and rarely more than a few)
MAX_RLE_BYTES = 1 << 20  # an RLE-compressed BMP's size: Pillow decodes its runs in Python (~0.3 s a MB)
MAX_RLE_PIXELS = 1 << 20  # and its pixels: Pillow pads every row a byte at a time (40000x1000, 5 KB: 5.7 s)

SEGMENT = struct.Struct(">BBH")  # a JPEG segment's start: 0xFF, its marker, its length (markers 0xD0-0xD9 have none)
STANDALONE = {*range(0xD0, 0xDA), 0x01}  # restarts, start and end of image, TEM: no length
NO_LENGTH_FOR_PILLOW = {0x00, 0xC8, *range(0xF0, 0xFE)}  # junk or reserved: libjpeg refuses them, Pillow skips them
FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers
PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
COUNTED = {**dict.fromkeys(FRAMES, 0), 0xDB: 1, 0xED: 2}  # frame headers, quantisation tables, Photoshop; 3: Exif
COUNTED_LIMITS = (1, 8, 16, 2)
FILL = re.compile(rb"\xff+")
NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # past compressed data (0xFF 0x00: a data byte; 0xD0-7: restart)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK = struct.Struct(">I4s")  # a chunk's length (its data's) and type; 4 bytes of CRC follow the data
PNG_COMPRESSED = {b"zTXt", b"iTXt", b"iCCP"}
MAX_EXIF_BYTES = 256 * 1024  # an EXIF block Pillow parses for the orientation (a JPEG's is 64 KB; imaging checks the
# one a WebP's reader found, which libwebp finds in C)
TIFF_PREFIXES = (b"MM\x00*", b"II*\x00", b"MM*\x00", b"II\x00*", b"MM\x00+", b"II+\x00")  # Pillow's
TIFF_PIECES = (273, 279, 324, 325)  # strip and tile offsets and byte counts: Pillow works a piece at a time on raw ones
MAX_TIFF_STRIPS = 1_000_000  # compressed ones go to libtiff in one call (a million one-row strips: 0.18 s)
TIFF_NUMBERS = {3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18}  # SHORT ... IFD8: a Python object per value
MAX_TIFF_VALUES = 65536  # a number tag's values, raw strips (6 us each), EXIF and GPS numbers (a bomb: millions)
TIFF_UNREAD = {33922, 34264}  # GeoTIFF tie points and transformation: tens of thousands, never unpacked by Pillow
TIFF_PALETTE = 320  # a ColorMap: 3 x 2^bits values
TIFF_INLINE = {3: 2, 4: 4, 13: 4, 16: 8, 18: 8}  # SHORT, LONG, IFD, LONG8, IFD8: bytes of one value
TIFF_SUBDIRECTORIES = (34665, 34853, 40965)  # EXIF, GPS, interoperability: Pillow reads them as it loads
TIFF_INTEROP = 40965


def check_layout(data: bytes) -> int | None:
    """Refuse (InvalidImage) a body whose pieces would cost a decoder far more than its size warrants. For a JPEG,
    where its first scan starts (the segments before it are all Pillow reads for orientation; the body's length
    when its header does not end); None for anything else."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        _png(data)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        _gif(data)
    elif data.startswith(TIFF_PREFIXES):
        _tiff(data)
    elif data.startswith(b"BM"):
        _bmp(data)
    return None


def _jpeg(data: bytes) -> int:
    at, components, progressive, fill, counts = 2, 0, False, 0, [0] * len(COUNTED_LIMITS)
    for _ in range(MAX_SEGMENTS):
        if at + SEGMENT.size > len(data):
            return len(data)  # no scan: the decoders say what is wrong with it
        tag, marker, length = SEGMENT.unpack_from(data, at)
        if tag != 0xFF:
            raise InvalidImage("The JPEG has stray bytes between its segments, before its pixels.")
        if marker == 0xFF:  # fill bytes before a marker, which Pillow reads one by one: skipped in one step
            run = FILL.match(data, at).end() - at - 1  # type: ignore[union-attr]
            fill += run
            if fill > MAX_FILL_BYTES:
                raise InvalidImage(f"The JPEG has over {MAX_FILL_BYTES:,} fill bytes before its pixels.")
            at += run
            continue
        if marker in STANDALONE:
            at += 2
            continue
        if marker in NO_LENGTH_FOR_PILLOW or length < 2:
            raise InvalidImage(f"The JPEG has a malformed segment (marker 0x{marker:02X}) before its pixels.")
        if marker in ARITHMETIC:
            raise InvalidImage(
                "Arithmetic-coded JPEGs are not supported (browsers and cameras do not write them); send a "
                "Huffman-coded JPEG (what every encoder writes by default) or a PNG."
            )
        _jpeg_segment(data, at, marker, length, counts)
        if marker in FRAMES and at + 10 <= len(data):
            components, progressive = data[at + 9], marker in PROGRESSIVE
        if marker == 0xDA:  # the first scan: more may follow unless it holds every component of a sequential frame
            if progressive or (at + 5 <= len(data) and data[at + 4] < components):
                _scans(data, at)
            return at
        at += 2 + length
    raise InvalidImage(f"The JPEG has over {MAX_SEGMENTS:,} segments before its pixels; cameras write about 20.")


def _jpeg_segment(data: bytes, at: int, marker: int, length: int, counts: list[int]) -> None:
    """The segments Pillow parses piece by piece in Python, bounded by what libjpeg accepts or cameras write: one
    frame header of its exact size, quantisation tables of their size, a few Exif (which Pillow joins) and Photoshop
    blocks. ``counts``: how many of each (COUNTED's slots) so far."""
    slot = (3 if data.startswith(b"Exif\x00\x00", at + 4) else None) if marker == 0xE1 else COUNTED.get(marker)
    if slot is None:
        return
    counts[slot] += 1
    wrong_size = (slot == 0 and at + 10 <= len(data) and length != 8 + 3 * data[at + 9]) or (
        slot == 1 and length > 2 + 4 * 129
    )
    if counts[slot] > COUNTED_LIMITS[slot] or wrong_size:
        raise InvalidImage(
            f"The JPEG's header has a segment (marker 0x{marker:02X}) that no encoder writes so often or so long: "
            "at most one frame header, 8 quantisation segments, 2 Exif and 16 Photoshop blocks."
        )


def _scans(data: bytes, at: int) -> None:
    """Count the scans from the first (at ``at``) to the end of the image, marker by marker: segments skipped by
    their lengths, compressed data by a search for the next marker (so an MPO's second picture or a phone's video
    after the end is not counted)."""
    scans = 0
    for _ in range(MAX_SEGMENTS):
        marker = data[at + 1]
        if marker == 0xD9:  # end of image
            return
        scans += marker == 0xDA
        if scans > MAX_SCANS:
            raise InvalidImage(
                f"The JPEG has over {MAX_SCANS} scans; encoders write up to about 10, and each costs a pass over "
                "every pixel."
            )
        skip = 2 if marker in STANDALONE else 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        found = NEXT_MARKER.search(data, at + max(skip, 2))
        if found is None:
            return
        at = found.start()
    raise InvalidImage(f"The JPEG has over {MAX_SEGMENTS:,} segments among its scans; encoders write a few dozen.")


def _png(data: bytes) -> None:
    """Pillow reads each chunk to the end (an animation's: to its second frame, as read here too)."""
    at, most = len(PNG_SIGNATURE), MAX_SEGMENTS + len(data) // PIECE_BYTES
    frames, pixels, compressed = 0, False, 0
    for _ in range(most):
        if at + PNG_CHUNK.size > len(data):
            return
        length, kind = PNG_CHUNK.unpack_from(data, at)
        if kind == b"IEND" or (kind == b"fcTL" and pixels and 1 < frames <= 0x80000000):
            return
        if kind == b"acTL" and not pixels and length >= 4:  # an animation, as Pillow takes it: one acTL of 2+ frames
            frames = int.from_bytes(data[at + 8 : at + 12], "big") if frames == 0 else -1
        if kind == b"eXIf" and length > MAX_EXIF_BYTES:
            raise InvalidImage(f"The PNG's EXIF block is over {MAX_EXIF_BYTES >> 10} KB; cameras write at most 64.")
        compressed += kind in PNG_COMPRESSED
        if compressed > MAX_PNG_COMPRESSED:
            raise InvalidImage(
                f"The PNG has over {MAX_PNG_COMPRESSED} compressed text or profile chunks; encoders write a few."
            )
        pixels = pixels or kind == b"IDAT"
        at += PNG_CHUNK.size + length + 4
    raise InvalidImage(
        f"The PNG is cut into over {most:,} chunks; encoders write a few, and their pixels in chunks of 8 KB or more."
    )


def _gif(data: bytes) -> None:
    """The blocks before the first picture: extensions (each data blocks up to an empty one) and the stray bytes
    Pillow skips one at a time."""
    if len(data) < 13:
        return
    flags = data[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # past the global palette
    extensions = blocks = stray = 0
    while at < len(data) and data[at] not in b",;":  # a picture, or the end
        if data[at] != 0x21:
            stray += 1
            at += 1
        else:
            extensions += 1
            at += 2  # introducer and label
            while at < len(data) and blocks <= MAX_GIF_BLOCKS:
                size = data[at]
                at += 1 + size
                blocks += 1
                if size == 0:
                    break
        if extensions > MAX_SEGMENTS or blocks > MAX_GIF_BLOCKS or stray > MAX_SEGMENTS:
            raise InvalidImage(
                f"The GIF has over {MAX_SEGMENTS:,} extensions (or {MAX_GIF_BLOCKS:,} data blocks, or {MAX_SEGMENTS:,} "
                "stray bytes) before its picture; encoders write a few."
            )


def _tiff(data: bytes) -> None:
    """The first directory (the picture Pillow opens) and the EXIF, GPS and interoperability ones it reads as it
    loads: their tags, each number tag's count (Pillow makes an object of each value), the strips or tiles."""
    layout = _tiff_layout(data)
    if layout.field + layout.offset.size > len(data):
        return
    (first,) = layout.offset.unpack_from(data, layout.field)  # the first directory's offset, after the header's start
    entries = _tiff_directory(data, first, layout)
    compressed = entries.get(259, (3, 1, 1))[2] != 1
    most = MAX_TIFF_STRIPS if compressed else MAX_TIFF_VALUES
    for tag in TIFF_PIECES:
        if entries.get(tag, (0, 0, 0))[1] > most:
            raise InvalidImage(
                f"The TIFF is cut into {entries[tag][1]:,} strips or tiles; this worker reads at most {most:,}."
            )
    inner = [_tiff_directory(data, entries[tag][2], layout) for tag in TIFF_SUBDIRECTORIES if tag in entries]
    inner += [_tiff_directory(data, d[TIFF_INTEROP][2], layout) for d in inner[:1] if TIFF_INTEROP in d]
    numbers = sum(values for d in inner for kind, values, _ in d.values() if kind in TIFF_NUMBERS)
    if numbers > MAX_TIFF_VALUES:  # each read in full, every time it is pointed at
        raise InvalidImage(f"The TIFF's EXIF and GPS directories hold {numbers:,} numbers; cameras write hundreds.")


class TiffLayout(NamedTuple):
    """How a TIFF writes its numbers: classic (4-byte offsets and value fields) or BigTIFF (8-byte), in its order."""

    offset: struct.Struct  # the first directory's offset
    tags: struct.Struct  # a directory's number of tags (`count` would hide the tuple's method)
    entry: struct.Struct  # a tag: its id, type, count, and value or offset
    big_endian: bool

    @property
    def field(self) -> int:
        """Bytes of an offset, and of a tag's value field."""
        return self.offset.size


def _tiff_layout(data: bytes) -> TiffLayout:
    order, big = "<" if data[:2] == b"II" else ">", data[2] == 0x2B  # as Pillow tells a BigTIFF
    return TiffLayout(
        struct.Struct(order + ("Q" if big else "I")),
        struct.Struct(order + ("Q" if big else "H")),
        struct.Struct(order + ("HHQQ" if big else "HHII")),
        order == ">",
    )


def _tiff_directory(data: bytes, at: int, layout: TiffLayout) -> dict[int, tuple[int, int, int]]:
    """The directory at ``at``: tag -> (type, count, value or offset), refused past MAX_SEGMENTS tags or with a
    number tag of more than MAX_TIFF_VALUES values (strips, tiles and a palette have their own bounds)."""
    count, entry = layout.tags, layout.entry
    if at + count.size > len(data):
        return {}
    (tags,) = count.unpack_from(data, at)
    if tags > MAX_SEGMENTS:
        raise InvalidImage(f"The TIFF's directory has {tags:,} tags; files carry a few dozen.")
    entries = {}
    for start in range(at + count.size, min(at + count.size + tags * entry.size, len(data) - entry.size + 1),
                       entry.size):  # fmt: skip
        tag, kind, values, value = entry.unpack_from(data, start)
        width = TIFF_INLINE.get(kind, 0)
        if width and values == 1:  # one number, kept in the first bytes of the field
            unused = 8 * (layout.field - width)
            value = value >> unused if layout.big_endian else value & ((1 << 8 * width) - 1)
        entries[tag] = (kind, values, value)
        limit = 3 * 65536 if tag == TIFF_PALETTE else MAX_TIFF_VALUES
        if kind in TIFF_NUMBERS and tag not in TIFF_PIECES and tag not in TIFF_UNREAD and values > limit:
            raise InvalidImage(f"The TIFF's tag {tag} holds {values:,} numbers; files hold a few.")
    return entries


def _bmp(data: bytes) -> None:
    """An RLE-compressed BMP: Pillow decodes its runs, and pads each row, one by one in Python."""
    if len(data) >= 34 and int.from_bytes(data[14:18], "little") >= 40:
        width, height = (abs(side) for side in struct.unpack_from("<ii", data, 18))  # negative: rows top-down
        compression = int.from_bytes(data[30:34], "little")
        if compression in (1, 2) and (len(data) > MAX_RLE_BYTES or width * height > MAX_RLE_PIXELS):  # RLE8, RLE4
            raise InvalidImage(
                f"An RLE-compressed BMP may be at most {MAX_RLE_BYTES >> 20} MB and {MAX_RLE_PIXELS >> 20} megapixel "
                "here (its runs are decoded one by one); send it as PNG."
            )
