"""Picture dimensions from the header bytes, before anything decodes the picture.

OpenCV's ``imdecode`` allocates the whole bitmap of whatever the header claims: a 32 KB PNG of 16384×16384
becomes 768 MB of BGR. Every image input is therefore sized first with :func:`image_size`, pure Python over the
first bytes of the file, and refused above a pixel budget.

Formats: PNG (IHDR), JPEG (the first SOFn marker; APPn/COM segments are skipped), GIF (logical screen and
every image descriptor's extent), BMP (BITMAPCOREHEADER and BITMAPINFOHEADER and later), WebP (VP8, VP8L,
VP8X) and TIFF (first IFD), the formats OpenCV decodes and callers send. ``None`` means the bytes are none of
them or their header is truncated or inconsistent: a caller refuses such a picture rather than guessing.
"""

from __future__ import annotations

import struct

#: how far into a JPEG the sniffer looks for its frame header (EXIF thumbnails can push it back)
JPEG_SCAN_LIMIT = 1 << 20


def _png(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _jpeg(data: bytes) -> tuple[int, int] | None:
    i = 2
    end = min(len(data), JPEG_SCAN_LIMIT)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def _gif(data: bytes) -> tuple[int, int] | None:
    """The logical screen, widened to every image descriptor that lies outside it (a decoder may allocate the
    union). Extension blocks and image data are skipped by their sub-block lengths."""
    if len(data) < 13:
        return None
    w, h, flags = struct.unpack("<HHB", data[6:11])
    i = 13
    if flags & 0x80:
        i += 3 * (2 << (flags & 7))
    n = len(data)
    while i < n:
        block = data[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            i += 2
        elif block == 0x2C:  # image descriptor
            if i + 10 > n:
                return None
            left, top, iw, ih, iflags = struct.unpack("<HHHHB", data[i + 1 : i + 10])
            w, h = max(w, left + iw), max(h, top + ih)
            i += 10
            if iflags & 0x80:
                i += 3 * (2 << (iflags & 7))
            i += 1  # LZW minimum code size
        else:
            return None
        while i < n and data[i] != 0:  # sub-blocks
            i += data[i] + 1
        i += 1
    return w, h


def _bmp(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:
        w, h = struct.unpack("<HH", data[18:22])
        return w, h
    if header >= 40:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return None
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    w = h = None
    for k in range(count):
        at = ifd + 2 + 12 * k
        if at + 12 > len(data):
            return None
        tag, typ = struct.unpack(order + "HH", data[at : at + 4])
        if typ == 3:
            (value,) = struct.unpack(order + "H", data[at + 8 : at + 10])
        elif typ == 4:
            (value,) = struct.unpack(order + "I", data[at + 8 : at + 12])
        else:
            continue
        if tag == 256:
            w = value
        elif tag == 257:
            h = value
    if w is None or h is None:
        return None
    return w, h


def image_format(data: bytes) -> str | None:
    """The picture format of ``data`` from its first bytes, as a file extension (``jpg``, ``png``, ``gif``,
    ``bmp``, ``webp``, ``tif``); None when it is none of them."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    return None


_SIZERS = {"png": _png, "jpg": _jpeg, "gif": _gif, "bmp": _bmp, "webp": _webp, "tif": _tiff}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that a decoder of ``data`` would allocate, from its header; None when unknown."""
    fmt = image_format(data)
    return None if fmt is None else _SIZERS[fmt](data)
