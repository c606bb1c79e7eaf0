"""Recording of a real RTSP camera (gst-rtsp-server test pattern) by a real agent process, played back through
GetDeviceVideoUrl (official SDK) with PyAV over HTTP; ``kill -9`` while recording; retention and quotas.

Segments are 2 s here (the shortest that still crosses several boundaries in a few seconds of footage)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from alibabacloud_vcs20200515 import models as m

from agent import samples
from agent.recording.index import INDEX_FILE, Gap, Library, Segment, camera_folder
from agent.recording.recorder import PTS_WRAP
from agent.recording.retention import DAY_MS, Policy, prune
from tests.api.conftest import KEY_ID, free_port
from tests.api.process import SECRET_ENV, AgentProcess, exchange, signed_request
from tests.peers import RtspServer, require_gst, wait_until

CAM = "34020000001320000051"


def site_yaml(
    data_dir: Path, rec_dir: Path, http_port: int, api_port: int, rtsp_url: str, extra: str = ""
) -> str:
    return f"""
site: {{name: recording, timezone: UTC, gb_prefix: "3402000000"}}
agent:
  data_dir: {data_dir}
  http: {{host: 127.0.0.1, port: {http_port}}}
  stop_timeout_s: 4
streams: {{mode: 1, open_timeout_s: 3, stall_timeout_s: 2, backoff_base_s: 0.2, backoff_cap_s: 0.5}}
api:
  host: 127.0.0.1
  port: {api_port}
  access_keys: [{{id: {KEY_ID}, secret: "${{{SECRET_ENV}}}"}}]
recording:
  dir: {rec_dir}
  segment_s: 2
  gap_s: 1
devices:
  - id: "{CAM}"
    name: recorded camera
    stream: {{main: "{rtsp_url}", transport: tcp}}
{extra or "instances: []"}
"""


EVENTS = f"""
detection: {{report_first_sighting: true, track_max_missed_s: 1}}
instances:
  - id: people
    name: people
    algorithm_id: body
    schedule: {{type: LONG_RUNNING}}
    spf: 1
    cameras: ["{CAM}"]
"""


class RecordingAgent(AgentProcess):
    def __init__(self, workdir: Path, rtsp_url: str, extra: str = "") -> None:
        super().__init__(workdir)
        self.rec_dir = workdir / "recordings"  # not under data_dir: the recording disk may be another one
        self.http_port = free_port()
        text = site_yaml(workdir / "data", self.rec_dir, self.http_port, self.api_port, rtsp_url, extra)
        self.site.write_text(text)

    def rows(self) -> list[Segment]:
        db = self.rec_dir / camera_folder(CAM) / INDEX_FILE
        if not db.is_file():
            return []
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                got = c.execute(
                    "SELECT start_ms, end_ms, bytes, path, kind, frames FROM segments ORDER BY start_ms"
                )
                return [Segment(*r) for r in got.fetchall()]
        except sqlite3.OperationalError:  # the table is being created
            return []

    def gaps(self) -> list[tuple[int, int, str]]:
        db = self.rec_dir / camera_folder(CAM) / INDEX_FILE
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            got = c.execute("SELECT start_ms, end_ms, reason FROM gaps ORDER BY start_ms")
            return [(a, b, r) for a, b, r in got]

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None


@pytest.fixture
def camera() -> Iterator[RtspServer]:
    require_gst()
    server = RtspServer(fps=25, gop=25).start()
    try:
        yield server
    finally:
        server.stop()


def _sdk(port: int) -> Any:
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_vcs20200515.client import Client

    from tests.api.conftest import SECRET

    return Client(
        Config(
            access_key_id=KEY_ID,
            access_key_secret=SECRET,
            endpoint=f"127.0.0.1:{port}",
            protocol="http",
            region_id="cn-shanghai",
            read_timeout=30000,
            connect_timeout=5000,
        )
    )


def _video_url(port: int, start: int, end: int, protocol: str = "hls", storage: str = "1") -> Any:
    req = m.GetDeviceVideoUrlRequest(
        device_id=CAM, storage_type=storage, start_time=start, end_time=end, out_protocol=protocol
    )
    return _sdk(port).get_device_video_url(req).body


def _call(agent: RecordingAgent, action: str, **params: str) -> dict[str, Any]:
    status, _, body = exchange(agent.api_port, signed_request(agent.api_port, {"Action": action, **params}))
    assert status == 200, body[:300]
    return dict(json.loads(body))


def _consistent(agent: RecordingAgent) -> list[Segment]:
    """Every row names a whole file of its size, every file has a row, nothing half-written is left."""
    rows = agent.rows()
    folder = agent.rec_dir / camera_folder(CAM)
    files = {p.relative_to(agent.rec_dir).as_posix() for p in folder.rglob("*.ts")}
    assert not list(folder.rglob("*.part"))
    assert files == {r.path for r in rows}
    for r in rows:
        assert (agent.rec_dir / r.path).stat().st_size == r.bytes, r
        with av.open(str(agent.rec_dir / r.path)) as c:
            n = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
        assert n == r.frames, (r, n)
    return rows


def test_continuous_recording_plays_across_a_boundary_and_an_outage(
    tmp_path: Path, camera: RtspServer
) -> None:
    agent = RecordingAgent(tmp_path, camera.url).start()
    try:
        assert wait_until(lambda: len(agent.rows()) >= 2, 60), agent.log_text()[-2000:]
        camera.stop()  # the camera goes down ...
        before = len(agent.rows())
        assert wait_until(lambda: len(agent.rows()) > before, 30), agent.log_text()[-2000:]  # open one closed
        down_at = agent.rows()[-1].end_ms
        camera.start()  # ... and comes back on the same address
        assert wait_until(lambda: any(r.start_ms > down_at for r in agent.rows()[1:]) and
                          len([r for r in agent.rows() if r.start_ms > down_at]) >= 2, 60), agent.log_text()[-2000:]  # fmt: skip
        gaps = agent.gaps()
        assert len(gaps) == 1 and gaps[0][0] == down_at, (gaps, down_at)
        rows = agent.rows()
        start, end = rows[0].start_ms, rows[-1].end_ms

        body = _video_url(agent.api_port, start, end)
        assert body.code == "200" and body.out_protocol == "hls", body
        playlist = urllib.request.urlopen(body.url, timeout=10).read().decode()
        assert playlist.count("#EXTINF") == len(rows)
        assert playlist.count("#EXT-X-DISCONTINUITY") == 1 and "#VCS-GAP:" in playlist

        with av.open(body.url, timeout=10) as c:
            v = c.streams.video[0]
            times = [
                round(float(p.pts * v.time_base) * 1000) for p in c.demux(v) if p.size and p.pts is not None
            ]
        assert len(times) == sum(r.frames for r in rows)
        # the timestamps are the recorded wall clock (ms, modulo the 33-bit TS clock)
        assert abs(times[0] - (rows[0].start_ms * 90 % PTS_WRAP) / 90) <= 1
        steps = [b - a for a, b in itertools.pairwise(times)]
        jumps = [s for s in steps if s > 500]
        assert len(jumps) == 1 and abs(jumps[0] - (gaps[0][1] - gaps[0][0])) <= 100, (jumps, gaps)
        assert sum(1 for s in steps if 30 <= s <= 50) >= len(steps) - 3  # 25 fps across segment boundaries

        # a range inside the first segment lists that one only; other protocols and StorageType 0 say why not
        one = _video_url(agent.api_port, rows[0].start_ms + 10, rows[0].start_ms + 20)
        assert urllib.request.urlopen(one.url, timeout=10).read().decode().count("#EXTINF") == 1
        for proto in ("flv", "httpsflv", "rtsp", "httpshls"):
            failed = _video_url(agent.api_port, start, end, proto)
            assert failed.code == "Failed" and failed.message and not failed.url, failed
        assert _video_url(agent.api_port, start, end, storage="0").code == "Failed"
        assert _video_url(agent.api_port, 1000, 2000).code == "Failed"  # nothing recorded then
        tampered = body.url.replace("&s=", "&s=x")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(tampered, timeout=10)
        assert err.value.code == 403

        # the timeline (box extension): one recording before the outage, the gap, one after
        line = _call(agent, "DescribeDeviceRecordings", DeviceId=CAM, StartTime=str(start), EndTime=str(end))
        spans = line["Data"]["Recordings"]
        assert len(spans) == 2 and (spans[0]["StartTime"], spans[0]["Kind"]) == (start, "continuous")
        assert line["Data"]["Gaps"] == [
            {"StartTime": gaps[0][0], "EndTime": gaps[0][1], "Reason": gaps[0][2]}
        ]
        # the API turns the camera's recording off (the open segment is finished) and back on
        folder = agent.rec_dir / camera_folder(CAM)
        assert _call(agent, "UpdateDeviceRecording", DeviceId=CAM, Mode="off")["Code"] == "200"
        assert wait_until(lambda: not list(folder.rglob("*.part")), 20)
        off_rows = agent.rows()
        assert _call(agent, "UpdateDeviceRecording", DeviceId=CAM, Mode="default")["Code"] == "200"
        assert wait_until(lambda: len(agent.rows()) > len(off_rows), 30)
        assert agent.rows()[len(off_rows)].start_ms > off_rows[-1].end_ms
    finally:
        agent.stop()
    _consistent(agent)


def test_kill_9_while_recording_leaves_index_and_files_consistent(tmp_path: Path, camera: RtspServer) -> None:
    agent = RecordingAgent(tmp_path, camera.url).start()
    folder = agent.rec_dir / camera_folder(CAM)
    try:
        assert wait_until(lambda: len(agent.rows()) >= 2, 60), agent.log_text()[-2000:]
        # mid-segment: a part file with some packets in it
        seen: list[int] = []

        def part_filled() -> bool:
            sizes = [p.stat().st_size for p in folder.rglob("*.part")]
            seen.extend(sizes)
            return any(s > 20_000 for s in sizes)

        assert wait_until(part_filled, 30), (sorted(set(seen))[-10:], [r.bytes for r in agent.rows()][-5:])
        agent.kill9()
        crashed_rows = len(agent.rows())
        assert list(folder.rglob("*.part"))
        agent.start()  # reconcile runs before recording resumes
        assert wait_until(lambda: "reconciled" in agent.log_text(), 30), agent.log_text()[-2000:]
        assert wait_until(lambda: len(agent.rows()) >= crashed_rows + 2, 60)
    finally:
        agent.stop()
    rows = _consistent(agent)
    assert len(rows) >= crashed_rows + 2


def _metric(agent: RecordingAgent, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{agent.http_port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_running_agent_keeps_a_camera_under_its_quota_oldest_first(
    tmp_path: Path, camera: RtspServer
) -> None:
    agent = RecordingAgent(tmp_path, camera.url)
    quota = 150_000  # about three 2 s segments of the test pattern
    text = agent.site.read_text().replace("  gap_s: 1\n", f"  gap_s: 1\n  quota_mb: {quota / 2**20:.6f}\n"
                                                              "  housekeeping_interval_s: 1\n")  # fmt: skip
    agent.site.write_text(text)
    agent.start()
    try:
        assert wait_until(lambda: len(agent.rows()) >= 2, 60), agent.log_text()[-2000:]
        first = agent.rows()[0]
        quota_deleted = 'vcs_edge_recording_deleted_segments_total{reason="quota"}'
        assert wait_until(lambda: _metric(agent, quota_deleted) >= 2, 60), agent.log_text()[-2000:]
        assert _metric(agent, "vcs_edge_recording_segments_total") >= 4
        assert "over its quota" in agent.log_text()
    finally:
        agent.stop()
    rows = _consistent(agent)
    assert rows and rows[0].start_ms > first.start_ms  # the oldest went
    assert sum(r.bytes for r in rows) <= quota + max(r.bytes for r in rows)  # one segment may have come since


def test_events_mode_records_around_real_detections(tmp_path: Path) -> None:
    require_gst()
    camera = RtspServer(file=samples.h264_clip()).start()  # the pedestrian clip: real people, real detections
    agent = RecordingAgent(tmp_path, camera.url, EVENTS)
    text = agent.site.read_text().replace(
        "  gap_s: 1\n", "  gap_s: 1\n  mode: events\n  pre_s: 2\n  post_s: 3\n"
    )
    agent.site.write_text(text)
    agent.start()
    try:
        assert wait_until(lambda: len(agent.rows()) >= 1, 90), agent.log_text()[-3000:]
        targets = _targets(tmp_path / "data")
        assert targets
        # each target record carries a clip link (the same link maker's record route) that plays
        found = _call(
            agent, "SearchTarget", CorpId="default", TargetType="Body", PageNumber="1", PageSize="50"
        )
        clips = [r["ClipUrl"] for r in found["Data"]["Records"] if r["ClipUrl"]]
        assert clips, found["Data"]["Records"][:2]
        assert "/record/" in clips[0] and "&s=" in clips[0]
        assert urllib.request.urlopen(clips[0], timeout=10).read().decode().count("#EXTINF") >= 1
    finally:
        agent.stop()
        camera.stop()
    rows = _consistent(agent)
    assert rows and all(r.kind == "event" for r in rows)
    targets = _targets(tmp_path / "data")
    # every target seen while recording lies inside event footage that starts up to pre_s (and a GOP) before it
    covered = [t for t in targets if any(r.start_ms <= t <= r.end_ms for r in rows)]
    assert covered, (targets[:5], rows[:3])
    first = min(covered)
    seg = next(r for r in rows if r.start_ms <= first <= r.end_ms)
    # footage from before the first target (the pre-buffer: pre_s, from a keyframe of the 2 s GOP, and never
    # from before the stream opened, which was about a second before the first detection)
    assert seg is rows[0] and seg.start_ms < first <= seg.start_ms + 2000 + 2000, (seg, first)


def _targets(data_dir: Path) -> list[int]:
    """Capture times (ms) of the stored targets."""
    db = data_dir / "targets.db"
    if not db.is_file():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        try:
            return sorted(int(r[0]) for r in c.execute("SELECT ts_ms FROM targets"))
        except sqlite3.OperationalError:
            return []


def _fake(lib: Library, cam: str, start_ms: int, size: int, kind: str = "continuous") -> Segment:
    """An index row with a file of ``size`` bytes (retention looks at rows and sizes, not at the video)."""
    idx = lib.index(cam)
    rel = f"{camera_folder(cam)}/d/{start_ms}{'_e' if kind == 'event' else ''}.ts"
    (lib.root / rel).parent.mkdir(parents=True, exist_ok=True)
    (lib.root / rel).write_bytes(b"\x47" * size)
    seg = Segment(start_ms, start_ms + 10_000, size, rel, kind, 250)
    idx.add(seg)
    return seg


def test_retention_quota_and_watermark_delete_the_right_segments_first(tmp_path: Path) -> None:
    lib = Library(tmp_path / "rec")
    now = 100 * DAY_MS
    a, b, c = "34020000001320000061", "34020000001320000062", "34020000001320000063"
    old_a = _fake(lib, a, now - 3 * DAY_MS, 1000)  # a keeps 2 days (UpdateDevicesStorage VIDEO)
    kept_a = _fake(lib, a, now - DAY_MS, 1000)
    old_b = _fake(lib, b, now - 8 * DAY_MS, 1000)  # b: the site default of 7 days
    event_b = _fake(lib, b, now - 8 * DAY_MS + 20_000, 1000, "event")  # events: 30 days
    kept_b = _fake(lib, b, now - 6 * DAY_MS, 1000)
    lib.index(b).add_gap(Gap(now - 40 * DAY_MS, now - 39 * DAY_MS, "old outage"))
    lib.index(b).add_gap(Gap(now - 6 * DAY_MS, now - 6 * DAY_MS + 5000, "recent outage"))
    policy = Policy(default_days=7, event_days=30, video_days={a: 2}, max_disk_percent=90)
    removed = prune(lib, policy, now, disk_usage=lambda: (10, 100))
    assert removed["age"] == 2
    assert [s.start_ms for s in lib.index(a).segments()] == [kept_a.start_ms]
    assert [s.start_ms for s in lib.index(b).segments()] == [event_b.start_ms, kept_b.start_ms]
    assert not (lib.root / old_a.path).exists() and not (lib.root / old_b.path).exists()
    assert [g.reason for g in lib.index(b).gaps()] == ["recent outage"]  # older than the event footage: gone

    # c is over its quota of 2500 bytes: its oldest continuous segments go, its event segment stays
    c_event = _fake(lib, c, now - 5000_000, 1000, "event")
    c_segs = [_fake(lib, c, now - 4000_000 + i * 10_000, 1000) for i in range(3)]
    policy.quota_bytes = {c: 2500}
    removed = prune(lib, policy, now, disk_usage=lambda: (10, 100))
    assert removed["quota"] == 2
    assert [s.start_ms for s in lib.index(c).segments()] == [c_event.start_ms, c_segs[2].start_ms]

    # the disk is 91 % full, its mark is 90 %: the oldest continuous footage of all cameras goes first until
    # it is under 98 % of the mark (2800 bytes: three segments), event footage stays
    removed = prune(lib, policy, now, disk_usage=lambda: (91_000, 100_000))
    left = {x: [s.start_ms for s in lib.index(x).segments()] for x in (a, b, c)}
    assert removed["watermark"] == 3, left  # kept_b (6 days old), kept_a (1 day), c's last (an hour)
    assert left == {a: [], b: [event_b.start_ms], c: [c_event.start_ms]}
    assert len(list(lib.root.rglob("*.ts"))) == 2
    lib.close()
