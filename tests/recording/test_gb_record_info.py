"""RecordInfo from a GB/T 28181 platform (the WVP-like emulator) lists what the box really recorded: the agent
(in process) records a real RTSP camera and registers upstream; the platform's RecordInfo answer has the
recorded span of the channel, in the platform's zone (UTC+8), split under 1300 bytes over UDP."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.box.supervisor import Supervisor
from agent.config import load_text
from agent.recording.index import Library
from tests.gb28181.platform import SERVER_ID, Platform
from tests.peers import RtspServer, require_gst

BOX = "34020000001180000001"
CAM = "34020000001320000081"
CH = "34020000001310000181"
PASSWORD = "s3cret-Pw9"
BEIJING = timezone(timedelta(hours=8))

pytestmark = pytest.mark.peer


def _site(tmp: Path, platform_port: int, url: str) -> str:
    return f"""
site: {{name: gbrec, timezone: UTC}}
agent: {{data_dir: {tmp}/data, http: {{host: 127.0.0.1, port: 0}}, stop_timeout_s: 6}}
streams: {{mode: 1, stall_timeout_s: 2, open_timeout_s: 5}}
devices:
  - {{id: "{CAM}", name: "cam 1", stream: {{main: "{url}"}}}}
recording: {{dir: {tmp}/rec, segment_s: 2, gap_s: 1}}
gb28181:
  server_id: "{SERVER_ID}"
  server_host: 127.0.0.1
  server_port: {platform_port}
  device_id: "{BOX}"
  password: ${{GB28181_PASSWORD}}
  local_ip: 127.0.0.1
  local_sip_port: 0
  channels: {{"{CAM}": "{CH}"}}
"""


async def _until(pred: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out on {pred}"
        await asyncio.sleep(0.05)


def test_record_info_lists_the_recorded_spans_of_a_channel(tmp_path: Path) -> None:
    require_gst()
    camera = RtspServer(fps=25, gop=25).start()

    async def main() -> None:
        platform = Platform(password=PASSWORD)
        await platform.start()
        site = load_text(_site(tmp_path, platform.port, camera.url), env={"GB28181_PASSWORD": PASSWORD})
        sup = Supervisor(site=site)
        await sup.start()
        lib = Library(tmp_path / "rec")  # a reader of the same indexes, as the API is
        try:
            await _until(lambda: BOX in platform.online, 20)
            await _until(lambda: len(lib.index(CAM).segments()) >= 3, 40)
            segs = lib.index(CAM).segments()
            now = datetime.now(BEIJING)
            fmt = "%Y-%m-%dT%H:%M:%S"
            start = (now - timedelta(hours=1)).strftime(fmt)
            end = (now + timedelta(hours=1)).strftime(fmt)
            sn = platform.record_info(BOX, CH, start, end)
            await _until(lambda: platform.record_list(sn)[0] is not None, 10)
            total, items = platform.record_list(sn)
            assert total == 1 and len(items) == 1, items  # contiguous segments are one recording
            item = items[0]
            first = datetime.fromtimestamp(round(segs[0].start_ms / 1000), BEIJING).strftime(fmt)
            assert item["DeviceID"] == CH and item["Type"] == "time" and item["StartTime"] == first, item
            assert item["EndTime"] >= datetime.fromtimestamp(segs[-1].end_ms / 1000, BEIJING).strftime(fmt)
            assert int(item["FileSize"]) >= sum(s.bytes for s in segs)

            # a range before anything was recorded: SumNum 0; only alarm footage asked: none (continuous only)
            earlier = (now - timedelta(days=2)).strftime(fmt), (now - timedelta(days=1)).strftime(fmt)
            sn = platform.record_info(BOX, CH, *earlier)
            await _until(lambda: platform.record_list(sn)[0] is not None, 10)
            assert platform.record_list(sn) == (0, [])
            sn = platform.record_info(BOX, CH, start, end, "alarm")
            await _until(lambda: platform.record_list(sn)[0] is not None, 10)
            assert platform.record_list(sn) == (0, [])
        finally:
            lib.close()
            await sup.stop()
            await platform.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        camera.stop()
