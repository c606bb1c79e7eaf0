"""PyAV helpers that turn a file into :class:`~pipelines.annexb.AccessUnit` values without decoding.

For the benchmarks and the tests (moved out of ``gb28181/``, which must not import PyAV); the agent reads
cameras through ``pipelines.sources``.

MP4/Matroska store H.264/H.265 length-prefixed (avcC/hvcC); GB28181's PS wants Annex B with parameter sets
before every keyframe, so the ``*_mp4toannexb`` bitstream filter runs when needed, and Annex B sources whose
keyframes lack in-band parameter sets (common with RTSP) get the stream's extradata prepended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.bitstream

from pipelines.annexb import SPS_TYPE, AccessUnit, codec_family, nal_types


def container_access_units(
    url: str | Path, *, loops: int = 1, options: dict[str, str] | None = None
) -> Iterator[AccessUnit]:
    """Access units of the first video stream of ``url`` (a file path or any URL PyAV opens).

    ``loops`` > 1 replays a file with continuing timestamps. Raises ``ValueError`` for codecs other than
    H.264/H.265 and PyAV's errors for unreadable input.
    """
    offset = 0
    for _ in range(max(1, loops)):
        last = offset
        with av.open(str(url), options=options or {}) as container:
            stream = container.streams.video[0]
            name = stream.codec_context.name
            family = codec_family(name)
            if family is None:
                raise ValueError(f"{url}: video codec {name!r} is neither H.264 nor H.265")
            codec = family
            extradata = bytes(stream.codec_context.extradata or b"")
            bsf = None
            if extradata[:1] == b"\x01":
                bsf = av.bitstream.BitStreamFilterContext(
                    "h264_mp4toannexb" if codec == "h264" else "hevc_mp4toannexb", stream
                )
            time_base = stream.time_base or Fraction(1, 90000)
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                for out in bsf.filter(packet) if bsf is not None else [packet]:
                    ts = out.pts if out.pts is not None else out.dts
                    if ts is None:
                        continue
                    data = bytes(out)
                    key = bool(out.is_keyframe)
                    if key and bsf is None and extradata and SPS_TYPE[codec] not in nal_types(data, codec):
                        data = extradata + data
                    pts = offset + int(ts * time_base * 90000)
                    last = max(last, pts)
                    yield AccessUnit(data, pts, key, codec)
        offset = last + 3600


async def paced(units: Iterable[AccessUnit], *, speed: float = 1.0) -> AsyncIterator[AccessUnit]:
    """Yield ``units`` at the pace their timestamps say (as a live camera would)."""
    loop = asyncio.get_running_loop()
    start: float | None = None
    first_pts = 0
    for au in units:
        if start is None:
            start, first_pts = loop.time(), au.pts_90k
        delay = start + (au.pts_90k - first_pts) / 90000 / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield au
