"""Events mode: the recorder keeps ``pre_s`` of packets in memory and writes from there to ``post_s`` after a
target. Fed real H.264 (libx264 through PyAV, 25 fps, one keyframe a second) with arrival times from a clock the
test drives, so the windows are exact; the agent-level run with real detections is in test_recording.py."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from agent.recording.index import SegmentIndex
from agent.recording.recorder import CameraRecorder
from pipelines.annexb import AccessUnit
from tests.peers import wait_until

CAM = "34020000001320000071"
FPS = 25
T0_MS = 1_800_000_000_000


def _units(seconds: int) -> list[AccessUnit]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.time_base = Fraction(1, FPS)
    enc.options = {"g": str(FPS), "bf": "0", "preset": "ultrafast", "x264-params": "repeat-headers=1"}
    out: list[AccessUnit] = []
    img = np.zeros((120, 160, 3), dtype=np.uint8)
    for i in range(seconds * FPS + 1):
        img[:, :, 0] = i % 256
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        for p in enc.encode(frame):
            out.append(AccessUnit(bytes(p), int(p.pts) * 90_000 // FPS, bool(p.is_keyframe)))
    for p in enc.encode(None):
        out.append(AccessUnit(bytes(p), int(p.pts) * 90_000 // FPS, bool(p.is_keyframe)))
    return out


def test_events_mode_records_pre_s_before_to_post_s_after_a_target(tmp_path: Path) -> None:
    now = [T0_MS / 1000]
    idx = SegmentIndex(tmp_path, CAM)
    rec = CameraRecorder(idx, "events", segment_s=60, pre_s=2, post_s=3, gap_s=5, clock=lambda: now[0])
    units = _units(20)
    for i, au in enumerate(units):
        now[0] = (T0_MS + i * 1000 // FPS) / 1000
        rec.offer(au)
        if i == 10 * FPS:
            rec.trigger(T0_MS + 10_000)  # a target at 10 s
    assert wait_until(lambda: rec.stats.units == len(units), 30)
    assert rec.stop()
    segs = idx.segments()
    assert len(segs) == 1 and segs[0].kind == "event", segs
    seg = segs[0]
    # from the keyframe at or before 10 - 2 s (whole GOPs are buffered) to the first unit after 10 + 3 s
    assert T0_MS + 7_000 <= seg.start_ms <= T0_MS + 8_000, seg.start_ms - T0_MS
    assert T0_MS + 13_000 <= seg.end_ms <= T0_MS + 13_100, seg.end_ms - T0_MS
    with av.open(str(tmp_path / seg.path)) as c:
        frames = sum(1 for f in c.decode(video=0))
    assert frames == seg.frames == (seg.end_ms - seg.start_ms) * FPS // 1000
    assert rec.stats.drops == 0 and rec.stats.errors == 0
    idx.close()


def test_off_between_events_and_continuous_splits_at_keyframes(tmp_path: Path) -> None:
    now = [T0_MS / 1000]
    idx = SegmentIndex(tmp_path, CAM)
    rec = CameraRecorder(idx, "continuous", segment_s=4, gap_s=5, clock=lambda: now[0])
    units = _units(10)
    for i, au in enumerate(units):
        now[0] = (T0_MS + i * 1000 // FPS) / 1000
        rec.offer(au)
    assert wait_until(lambda: rec.stats.units == len(units), 30)
    assert rec.stop()
    segs = idx.segments()
    assert [s.start_ms - T0_MS for s in segs] == [0, 4000, 8000]
    assert [s.end_ms for s in segs[:-1]] == [s.start_ms for s in segs[1:]]  # no hole at a boundary
    assert sum(s.frames for s in segs) == len(units)
    for s in (
        segs
    ):  # a keyframe a second, at its byte offset in the file (after the SDT, PAT and PMT: 3 TS packets)
        assert [k[0] for k in s.keyframes] == list(range(0, len(s.keyframes) * 1000, 1000)), s.keyframes
        assert s.keyframes[0][1] == 3 * 188
        data = (tmp_path / s.path).read_bytes()
        assert all(data[off] == 0x47 and data[off + 1] & 0x40 for _, off in s.keyframes)  # a PES start
    idx.close()
