"""Pictures are bounded by pixels: the header sniffer (pipelines/images.py) on real encoded files of every
format, truncated and corrupted ones, and SearchTarget TargetImageData against a running agent."""

from __future__ import annotations

import base64
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from alibabacloud_vcs20200515 import models

from pipelines.images import image_size

from .conftest import Agent, make_agent, sdk_client


def _encoded(ext: str, w: int, h: int, params: list[int] | None = None) -> bytes:
    img = np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return bytes(buf.tobytes())


def _gif(w: int, h: int, frame: tuple[int, int, int, int] | None = None) -> bytes:
    """A one-frame GIF (2-colour table, one LZW-coded pixel) with an image descriptor at ``frame``."""
    left, top, fw, fh = frame or (0, 0, w, h)
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    out += b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control extension
    out += b"\x2c" + struct.pack("<HHHHB", left, top, fw, fh, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def _huge_png(w: int, h: int) -> bytes:
    """A valid grey PNG of w×h zero pixels, compressed row by row (a few tens of KB for 16384×16384)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


FORMATS = {
    "png": lambda w, h: _encoded(".png", w, h),
    "jpeg": lambda w, h: _encoded(".jpg", w, h),
    "jpeg-progressive": lambda w, h: _encoded(".jpg", w, h, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "bmp": lambda w, h: _encoded(".bmp", w, h),
    "webp-lossy": lambda w, h: _encoded(".webp", w, h, [cv2.IMWRITE_WEBP_QUALITY, 80]),
    "webp-lossless": lambda w, h: _encoded(".webp", w, h, [cv2.IMWRITE_WEBP_QUALITY, 101]),
    "tiff": lambda w, h: _encoded(".tiff", w, h),
    "gif": _gif,
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize(("w", "h"), [(37, 23), (640, 480), (1, 300)])
def test_sniffer_reads_the_dimensions_a_decoder_allocates(fmt: str, w: int, h: int) -> None:
    data = FORMATS[fmt](w, h)
    assert image_size(data) == (w, h)
    if fmt != "gif":  # OpenCV has no GIF decoder in every build; the others must agree with it
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded is not None and decoded.shape[:2] == (h, w)


def test_gif_frame_outside_the_screen_counts() -> None:
    assert image_size(_gif(10, 10, (0, 0, 10, 10))) == (10, 10)
    assert image_size(_gif(10, 10, (5000, 0, 20000, 30000))) == (25000, 30000)


def test_jpeg_frame_header_after_large_app_segments() -> None:
    data = _encoded(".jpg", 50, 40)
    app = b"\xff\xe1" + struct.pack(">H", 65535) + b"\x00" * 65533
    assert image_size(data[:2] + app * 3 + data[2:]) == (50, 40)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_truncated_and_corrupted_headers_never_raise(fmt: str) -> None:
    data = FORMATS[fmt](64, 48)
    for n in range(min(len(data), 200)):
        got = image_size(data[:n])
        assert got is None or got == (64, 48) or all(isinstance(x, int) for x in got)
    rng = random.Random(fmt)
    for _ in range(300):
        b = bytearray(data[:256])
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(8, len(b))] = rng.randrange(256)
        got = image_size(bytes(b))
        assert got is None or (isinstance(got[0], int) and isinstance(got[1], int))


def test_unknown_bytes_are_none() -> None:
    for data in (
        b"",
        b"hello",
        b"\x00" * 100,
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"P6\n1 1\n255\n\x00\x00\x00",
    ):
        assert image_size(data) is None


def _rss_peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


@pytest.fixture
def picture_agent(tmp_path: Path) -> Any:
    a = make_agent(tmp_path)
    decoded: list[tuple[int, ...]] = []

    def embed(image: bytes, target_type: str) -> Any:
        """What the box's embedder does first (agent.analytics.pipeline.embed_picture): decode with OpenCV."""
        img = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        decoded.append(() if img is None else img.shape)
        return None

    assert a.api is not None
    a.api.ctx.embedder = embed
    try:
        yield a, decoded
    finally:
        a.close()


def _search(agent: Agent, data: bytes) -> Any:
    client = sdk_client(agent)
    req = models.SearchTargetRequest(
        corp_id="site-project",
        target_type="Face",
        page_number=1,
        page_size=10,
        target_image_data=base64.b64encode(data).decode(),
    )
    with pytest.raises(Exception) as info:
        client.search_target(req)
    return info.value


def test_search_by_picture_refuses_huge_dimensions_before_decoding(picture_agent: Any) -> None:
    agent, decoded = picture_agent
    bomb = _huge_png(16384, 16384)
    assert len(bomb) < 500 * 1024 and image_size(bomb) == (16384, 16384)
    jpeg = bytearray(_encoded(".jpg", 64, 48))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # a 60000×60000 frame header
    _reset_peak()
    base = _rss_peak_kb()
    for data, dims in ((bomb, "16384x16384"), (bytes(jpeg), "60000x60000")):
        err = _search(agent, data)
        assert err.code == "InvalidParameter", err
        assert "TargetImageData" in err.message and dims in err.message and "max_image_pixels" in err.message
    assert decoded == []  # nothing reached the decoder
    assert _rss_peak_kb() - base < 100 * 1024  # decoding the PNG alone would allocate 768 MB
    # not a picture at all: refused, not passed on
    err = _search(agent, b"not a picture" * 10)
    assert err.code == "InvalidParameter" and "not a picture" in err.message
    # a picture inside the bound reaches the embedder (which finds no face in noise)
    err = _search(agent, _encoded(".png", 320, 240))
    assert err.code == "InvalidParameter" and "no Face found" in err.message
    assert decoded == [(240, 320, 3)]


def test_pixel_bound_is_configurable(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, max_image_pixels=100 * 100)
    try:
        err = _search(agent, _encoded(".png", 101, 100))
        assert err.code == "InvalidParameter" and "at most 10000 pixels" in err.message
    finally:
        agent.close()
