"""GB/T 28181 Playback and Download of recorded footage: the agent (in process) records a real RTSP camera; the
WVP-like emulator INVITEs s=Playback / s=Download with a t= range over UDP and TCP and decodes the PS/RTP it gets
frame-exact (every recorded unit of the range, from the keyframe at or before its start); MANSRTSP INFO pauses,
resumes at another Scale, and seeks; the device ends with BYE at the end of the range."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.box.supervisor import Supervisor
from agent.config import load_text
from agent.recording.index import Library
from agent.recording.replay import read_units
from tests.gb28181.mediautil import decode_ps, ps_from_rtp
from tests.gb28181.platform import MediaCapture, Platform
from tests.peers import RtspServer, require_gst

from .test_gb_record_info import BOX, CAM, CH, PASSWORD, _site, _until

pytestmark = pytest.mark.peer
SSRC = "1200003792"


def _expected(lib: Library, start_s: int, end_s: int) -> int:
    """Units of the range as stored: from the last keyframe at or before the start, up to the end."""
    units = [
        (w, u)
        for seg in lib.index(CAM).segments(start_s * 1000, end_s * 1000)
        for w, u in read_units(lib.root / seg.path, seg.start_ms)
    ]
    keys = [i for i, (w, u) in enumerate(units) if u.keyframe and w <= start_s * 1000]
    return sum(1 for w, _ in units[keys[-1] if keys else 0 :] if w < end_s * 1000)


def test_playback_and_download_over_udp_and_tcp_with_pause_and_seek(tmp_path: Path) -> None:
    require_gst()
    camera = RtspServer(fps=25, gop=25).start()

    async def main() -> None:
        platform = Platform(password=PASSWORD)
        await platform.start()
        site = load_text(_site(tmp_path, platform.port, camera.url), env={"GB28181_PASSWORD": PASSWORD})
        sup = Supervisor(site=site)
        await sup.start()
        lib = Library(tmp_path / "rec")
        try:
            await _until(lambda: BOX in platform.online, 20)
            await _until(lambda: len(lib.index(CAM).segments()) >= 5, 60)
            segs = lib.index(CAM).segments()
            start = segs[1].start_ms // 1000 + 1  # inside a segment: playback starts at a keyframe before
            end = start + 4

            async def play(mode: str, session: str, speed: int | None = None) -> MediaCapture:
                cap = await platform.invite(BOX, CH, mode, SSRC, session=session, time_range=(start, end),
                                            download_speed=speed)  # fmt: skip
                assert cap.answer is not None and cap.answer.status == 200, cap.answer
                return cap

            # Download at 4x over UDP, Playback at 1x over TCP: every unit of the range, decoded
            want = _expected(lib, start, end)
            assert want >= 4 * 25
            for mode, session, speed in (("udp", "Download", 4), ("tcp-passive", "Playback", None)):
                cap = await play(mode, session, speed)
                await asyncio.wait_for(cap.device_bye.wait(), 20)  # the range was sent: the device hangs up
                await _until(lambda c=cap: len(c.packets) >= sup_sent(sup, c), 10)
                assert decode_ps(ps_from_rtp(cap.packets, int(SSRC))) == want, (mode, session)

            # pause, then resume at Scale 4; seek back to the start: more than the range, all decodable
            cap = await play("udp", "Playback")
            await _until(lambda: len(cap.packets) > 20, 10)
            ok = await platform.info(BOX, cap, "PAUSE RTSP/1.0\nCSeq: {cseq}\nPauseTime: now\n")
            assert ok.status == 200
            await _until(lambda: session_state(sup, cap).playing.is_set() is False, 5)
            ok = await platform.info(BOX, cap, "PLAY RTSP/1.0\nCSeq: {cseq}\nRange: npt=0-\nScale: 4.0\n")
            assert ok.status == 200
            await asyncio.wait_for(cap.device_bye.wait(), 20)
            await _until(lambda: len(cap.packets) >= sup_sent(sup, cap), 10)
            frames = decode_ps(ps_from_rtp(cap.packets, int(SSRC)))
            assert frames > want, (frames, want)  # what went before the seek, then the whole range again
            bad = await platform.info(BOX, cap, "PLAY RTSP/1.0\nCSeq: {cseq}\nScale: -1\n")
            assert bad.status == 481  # the session is over

            # a range with nothing recorded is refused
            none = await platform.invite(BOX, CH, "udp", SSRC, session="Playback", time_range=(1000, 2000))
            assert none.answer is not None and none.answer.status == 200  # the channel has recordings ...
            await asyncio.wait_for(none.device_bye.wait(), 10)  # ... but not then: it ends at once
            assert not none.packets
        finally:
            lib.close()
            await sup.stop()
            await platform.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 150))
    finally:
        camera.stop()


def _bridge(sup: Supervisor):  # type: ignore[no-untyped-def]
    from agent.gb.bridge import GbBridge

    svc = sup.service("gb28181")
    assert isinstance(svc, GbBridge) and svc.service is not None
    return svc.service


def sup_sent(sup: Supervisor, cap: MediaCapture) -> int:
    return int(_bridge(sup).rtp_packets_by_session.get(cap.call_id, 0))


def session_state(sup: Supervisor, cap: MediaCapture):  # type: ignore[no-untyped-def]
    return _bridge(sup)._sessions[cap.call_id].extra["playback"]
