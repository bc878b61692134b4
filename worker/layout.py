"""A body's layout, read from its lengths and counts before any decoder parses it.

Usage:
    header_end = check_layout(body)  # InvalidImage, or where a JPEG's first scan starts (None: not a JPEG)

Pillow parses JPEG segments, PNG chunks, GIF blocks, TIFF directories and strips and BMP runs in Python, a piece at
a time, under the GIL; libjpeg-turbo makes a pass over every block of a JPEG for each of its scans, empty or not. So a
body of many empty pieces costs far more than its size warrants. Measured on this project's machine (Xeon, one
request): 5,000 empty scans (50 KB) on a 4-megapixel JPEG 3.8 s, 5,000 scans of one component each (sequential,
arithmetic-coded: no decoder complains) 19.7 s; 20 MB of empty JPEG comments 5 s, of empty PNG chunks 7 s, of
corrupt compressed PNG text 13 s, of empty GIF extensions 2 s; 300,000 TIFF strips (1.8 MB) 1.9 s; 10 MB of
one-pixel BMP runs 2.9 s. Each is refused here, in microseconds to a few milliseconds, with the reason; what real
encoders write passes (cameras, phones, browsers, libpng, giflib, libtiff: a few to a few dozen pieces).
"""

from __future__ import annotations

import re
import struct

from .errors import InvalidImage

MAX_SEGMENTS = 1000  # JPEG segments, PNG chunks, GIF extensions, TIFF tags (cameras write 10-50; a 20 MB XMP in 64 KB
# blocks, 320)
PIECE_BYTES = 1024  # and, for PNG chunks and TIFF strips, one more per this many bytes of body (libpng writes 8 KB)
MAX_SCANS = 100  # a JPEG's scans: encoders write 1-10 (progressive), cjpeg's scan scripts allow at most 100
MAX_GIF_BLOCKS = 100_000  # the data blocks (at most 255 bytes each) of a GIF's extensions before its picture
MAX_PNG_COMPRESSED = 100  # zTXt, iTXt and iCCP chunks: Pillow inflates each (up to 1 MB); encoders write a few
MAX_FILL_BYTES = 1 << 16  # 0xFF bytes before a JPEG marker (allowed, and rarely more than a few)
MAX_RLE_BYTES = 1 << 20  # an RLE-compressed BMP's size: Pillow decodes its runs in Python (~0.3 s a MB)

SEGMENT = struct.Struct(">BBH")  # a JPEG segment's start: 0xFF, its marker, its length (markers 0xD0-0xD9 have none)
STANDALONE = {*range(0xD0, 0xDA), 0x01}  # restarts, start and end of image, TEM: no length
NO_LENGTH_FOR_PILLOW = {0x00, 0xC8, *range(0xF0, 0xFE)}  # junk or reserved: libjpeg refuses them, Pillow skips them
FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers
PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
FILL = re.compile(rb"\xff+")
NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # past compressed data (0xFF 0x00: a data byte; 0xD0-7: restart)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK = struct.Struct(">I4s")  # a chunk's length (its data's) and type; 4 bytes of CRC follow the data
PNG_COMPRESSED = {b"zTXt", b"iTXt", b"iCCP"}
TIFF_OFFSETS = {273, 324}  # StripOffsets, TileOffsets: Pillow makes a piece of work of each (uncompressed)


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
    elif data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        _tiff(data)
    elif data.startswith(b"BM"):
        _bmp(data)
    return None


def _jpeg(data: bytes) -> int:
    at, components, progressive, fill = 2, 0, False, 0
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
        if marker in FRAMES and at + 10 <= len(data):
            components, progressive = data[at + 9], marker in PROGRESSIVE
        if marker == 0xDA:  # the first scan: more may follow unless it holds every component of a sequential frame
            if progressive or (at + 5 <= len(data) and data[at + 4] < components):
                _scans(data, at)
            return at
        at += 2 + length
    raise InvalidImage(f"The JPEG has over {MAX_SEGMENTS:,} segments before its pixels; cameras write about 20.")


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
    """The first directory (the picture Pillow opens): its tags, and its strips or tiles."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    head, count, entry = (struct.Struct(order + "Q"), struct.Struct(order + "Q"), struct.Struct(order + "HHQ")) if big \
        else (struct.Struct(order + "I"), struct.Struct(order + "H"), struct.Struct(order + "HHI"))  # fmt: skip
    where = 8 if big else 4
    if where + head.size > len(data):
        return
    (at,) = head.unpack_from(data, where)
    if at + count.size > len(data):
        return
    (tags,) = count.unpack_from(data, at)
    if tags > MAX_SEGMENTS:
        raise InvalidImage(f"The TIFF's directory has {tags:,} tags; files carry a few dozen.")
    most = MAX_SEGMENTS + len(data) // PIECE_BYTES
    step = 20 if big else 12
    for first in range(at + count.size, min(at + count.size + tags * step, len(data) - entry.size + 1), step):
        tag, _, values = entry.unpack_from(data, first)
        if tag in TIFF_OFFSETS and values > most:
            raise InvalidImage(f"The TIFF is cut into {values:,} strips or tiles; encoders write one per 8 KB or more.")


def _bmp(data: bytes) -> None:
    if len(data) >= 34 and int.from_bytes(data[14:18], "little") >= 40:
        compression = int.from_bytes(data[30:34], "little")
        if compression in (1, 2) and len(data) > MAX_RLE_BYTES:  # RLE8, RLE4
            raise InvalidImage(
                f"An RLE-compressed BMP may be at most {MAX_RLE_BYTES // (1 << 20)} MB here (its runs are decoded one "
                "by one); send it as PNG."
            )
