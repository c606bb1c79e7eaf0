"""Capacity: how many Spf=1 face+body cameras the whole agent keeps up with on this box, and at what latency.

Each step runs the real agent as a subprocess (``python -m agent.cli run -c <generated site.yaml>``) with N
cameras, all in one ``face_body`` instance at Spf=1, continuous mode, so the RSS read from
``/proc/<pid>/status`` (VmRSS at the end of the step, VmHWM for the peak) is the agent's own. The agent is
restarted for every step.

Footage: OpenCV's vtest (people walking, 768x576, 10 fps, 79.5 s) re-encoded to H.264 with a 1 s GOP (10
frames, no B-frames), as a well-configured camera sends it: at Spf=1 the agent decodes keyframes only. Each
camera gets its own copy of the clip rotated to a different start second (packet remux, no re-encode), so the
cameras do not all show the same frame, and delayed by a different fraction of a second after its first GOP,
so the cameras' keyframes are not in phase (real cameras are not synchronised; in phase, every second starts
with a burst of N frames). The copies are served over real RTSP (TCP interleaved) by aio-rtsp-toolkit
``rtsp-server`` subprocesses, the peer the demo uses, one per 5 cameras (it streams each session from a thread
of asyncio's default pool, which has 6 threads on 2 cores: a 7th session gets no data). RTSP exercises the
agent's real ingest path (ffmpeg's RTSP demuxer, RTP depacketising, stall timers) where a ``file`` source
would read the disk.
The servers run on the same 2 cores and their CPU time is reported (``rtsp_server_cpu_pct``): on a real site
the cameras do this work, so the figure is a lower bound of the agent's capacity. ``--gop 20`` runs the same
search with a 2 s GOP (the sampler then decodes the frames up to each 1 s mark, not only keyframes).

Targets go through a real Mosquitto (generated config, free loopback port) with
``report_first_sighting: true``, so every new track is published at once. A paho-mqtt subscriber measures
latency = receive time - capture time. The record's ``Timestamp`` has whole seconds only (the API's form), so
the capture time comes from the TargetId, whose first 48 bits are the track start in Unix milliseconds; for a
first sighting the track start *is* the capture time of the reported frame (the source stamps
``captured_at`` with the wall clock when the frame is decoded). A record whose id time does not fall in its
Timestamp's second is not a first sighting (a track older than ``track_max_age_s`` is reported again under a
new id when that segment ends, with its best shot): it is counted (``later_reports``), not timed. Latency is
capture -> broker -> subscriber, an upper bound of capture -> broker ack.

"Keeps up" over a measurement window (default 30 s after a 10 s warm-up, both counted from the moment all
streams are online): no frame dropped (``vcs_edge_analytics_frames_dropped_total`` and the stream queues'
``vcs_edge_stream_drops_total`` stay flat), frames sampled >= 95% of N x window, frames detected >= frames
sampled - N (the backlog grew by less than one interval's frames; counters are read at the window's edges, so
a batch in flight there is not a miss), and the detector lag
(capture -> detection done of the last finished frame, the ``vcs_edge_analytics_detect_lag_seconds`` gauge,
polled every 0.5 s) stays under one sampling interval (1 s) for the whole window, and capture -> broker p99 of
the first sightings stays under 1 s (``TARGET_P99_MS``): a box that keeps up only by reporting late does not
count.

The agent runs with the shipped detection defaults; ``--detection KEY=VALUE`` (e.g. ``intra_op_threads=1``,
``face.input_width=480``) overrides one in the generated site and is echoed in the JSON
(``detection_overrides``), so a figure is never taken with changed settings unawares.

Search: N = 1 (the baseline), then 8, 12, 16, ... until a step fails, then bisection between the last pass
and the first fail down to a step of 2. The result is the last N that passed with its p50/p99 latency and
RSS. Baseline (same run): the single-camera step; ratios ``rss_ratio_vs_1cam`` and ``p99_ratio_vs_1cam``
show what the load costs in memory and latency against the lightly loaded agent, and
``cpu_pct_per_camera`` the marginal cost of a camera. ``targets`` are one load: ``meets_targets`` is true when
the result has at least 32 cameras and the 32-camera step (``at_target``, always part of the search) passed with
p99 under 1 s and RSS under 1 GB.

    python -m bench.capacity --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from agent.demo import RtspFileServer

ROOT = Path(__file__).resolve().parents[1]
FPS = 10
SPF = 1.0
TARGET_CAMERAS = 32
TARGET_P99_MS = 1000.0
TARGET_RSS_MB = 1024.0
MIN_DETECTED_FRACTION = 0.95
MAX_LAG_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: aio-rtsp-toolkit's rtsp-server streams each session from asyncio.to_thread, whose default pool has
#: min(32, cores + 4) threads: 6 concurrent sessions on this box. One server per 5 cameras.
CAMERAS_PER_SERVER = 5


def log(msg: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- footage ---------------------------------------------------------------------------------------------------


def make_clip(gop: int) -> Path:
    """vtest at 10 fps re-encoded to H.264 (libx264, GOP ``gop`` frames, no B-frames), cached."""
    import av
    from av.video.frame import PictureType

    from agent.samples import cache_dir, pedestrian_video

    dest = cache_dir() / "media" / f"capacity_vtest_g{gop}.mkv"
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part.mkv")
    with av.open(str(pedestrian_video())) as inp, av.open(str(part), "w") as out:
        src = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = (
            src.codec_context.width,
            src.codec_context.height,
            "yuv420p",
        )
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = {
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": "0",
            "preset": "veryfast",
            "crf": "23",
        }
        for index, frame in enumerate(inp.decode(src)):
            f = frame.reformat(format="yuv420p")
            f.pict_type = PictureType.NONE
            f.pts, f.time_base = index, stream.codec_context.time_base
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    part.replace(dest)
    return dest


def rotated_copy(clip: Path, dest: Path, start_s: float, phase_s: float = 0.0) -> None:
    """The clip starting at the first keyframe at or after ``start_s``, wrapped around (packets copied).

    Everything after the first GOP is delayed by ``phase_s``: the server plays by media time, so this camera's
    keyframes then arrive ``phase_s`` after the whole second of its session, as unsynchronised cameras do.
    """
    import av

    with av.open(str(clip)) as inp:
        src = inp.streams.video[0]
        tb = src.time_base
        assert tb is not None
        packets = [(p, p.pts) for p in inp.demux(src) if p.size > 0 and p.pts is not None]
        ptss = [int(pts) for _, pts in packets if pts is not None]
        step = ptss[1] - ptss[0] if len(ptss) > 1 else 1
        total = ptss[-1] + step - ptss[0]
        cut = next((i for i, (p, _) in enumerate(packets) if p.is_keyframe and ptss[i] * tb >= start_s), 0)
        order = list(range(cut, len(packets))) + list(range(cut))
        phase = round(phase_s / tb)
        with av.open(str(dest), "w") as out:
            ostream = out.add_stream_from_template(src)
            for k, i in enumerate(order):
                p = packets[i][0]
                pts = (ptss[i] - ptss[cut]) % total
                p.pts = p.dts = pts + (phase if k >= FPS else 0)
                p.stream = ostream
                out.mux(p)


# -- peers -----------------------------------------------------------------------------------------------------


class Mosquitto:
    """A Mosquitto process on 127.0.0.1:port with a generated config (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1\n",
            "allow_anonymous true\n",
            "max_queued_messages 100000\n",
        ]
        if os.geteuid() == 0:
            lines.append("user root\n")
        conf.write_text("".join(lines))
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_listening(self.port, self.proc, "mosquitto")

    def stop(self) -> None:
        stop_proc(self.proc)


GST_SERVER = ROOT / "tests" / "peers" / "rtsp_gst.py"
SYSTEM_PYTHON = "/usr/bin/python3"
GST_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"


def gst_available() -> bool:
    """Debian's python3-gi with gst-rtsp-server (``./dev test`` installs it as a test peer)."""
    probe = 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer'
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class GstFileServer:
    """gst-rtsp-server (C, ``tests/peers/rtsp_gst.py --folder``) serving every ``*.mkv`` of a folder on
    127.0.0.1, each file at its own pace; the same interface as :class:`agent.demo.RtspFileServer`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(GST_SERVER), "--port", str(self.port), "--folder", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_listening(self.port, self.proc, "gst-rtsp-server")

    def stop(self) -> None:
        stop_proc(self.proc)


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} in time")


def stop_proc(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Subscriber:
    """paho-mqtt on the targets topic: capture -> receive latency of each new TargetId."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.lock = threading.Lock()
        self.seen: dict[str, tuple[float, float]] = {}  # TargetId -> (capture unix s, receive unix s)
        self.duplicates = 0
        self.later = 0
        self.malformed = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"capacity-{os.getpid()}")
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.port = port

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from agent.analytics.targets import parse_timestamp, target_id_time

        now = time.time()
        try:
            t = json.loads(msg.payload)
            tid = str(t["TargetId"])
            captured = target_id_time(tid).timestamp()
            stamp = parse_timestamp(str(t["Timestamp"])).timestamp()
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        with self.lock:
            if tid in self.seen:
                self.duplicates += 1
                return
            if not stamp - 0.001 <= captured < stamp + 1.0:
                # Not a first sighting (a track older than track_max_age_s is reported again under a new id
                # when its segment ends, with its best shot): its delay is by design, not latency.
                self.later += 1
                self.seen[tid] = (float("nan"), now)
                return
            self.seen[tid] = (captured, now)

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def latencies_ms(self, t0: float, t1: float) -> list[float]:
        with self.lock:
            return [(r - c) * 1000.0 for c, r in self.seen.values() if t0 <= c < t1]


# -- the agent under test ---------------------------------------------------------------------------------------


def device_id(i: int) -> str:
    return f"3402000000132{i + 1:07d}"


DETECTION_OVERRIDES: dict[str, Any] = {}
#: which RTSP server plays the cameras (``--server``)
SERVER: dict[str, str] = {"kind": "gst"}


def site_yaml(urls: list[str], mqtt_port: int, http_port: int, data_dir: Path, gop: int) -> dict[str, Any]:
    ids = [device_id(i) for i in range(len(urls))]
    return {
        "version": 1,
        "site": {"name": "capacity", "timezone": "UTC", "gb_prefix": "3402000000", "city_code": "340200"},
        "agent": {
            "data_dir": str(data_dir),
            "http": {"host": "127.0.0.1", "port": http_port},
            "log": {"level": "warning"},
        },
        "streams": {
            "mode": 1,
            "rtsp_transport": "tcp",
            "stall_timeout_s": 5,
            "backoff_base_s": 0.5,
            "backoff_cap_s": 5,
        },
        "devices": [
            {
                "id": did,
                "type": "IPC",
                "name": f"cam {i + 1}",
                "frame_rate": FPS,
                "gop": gop,
                "resolution": "768*576",
                "stream": {"main": urls[i]},
            }
            for i, did in enumerate(ids)
        ],
        "detection": detection_section(),
        "mqtt": {"enabled": True, "embedded": False, "host": "127.0.0.1", "port": mqtt_port},
        "instances": [
            {
                "id": "people",
                "name": "people",
                "algorithm_id": "face_body",
                "schedule": {"type": "LONG_RUNNING"},
                "spf": SPF,
                "cameras": ids,
            }
        ],
    }


def detection_section() -> dict[str, Any]:
    """``report_first_sighting`` on, plus the ``--detection KEY=VALUE`` overrides (dotted keys).

    ``track_max_age_s`` is longer than any run: a track that ages out goes on under a new id whose first report
    comes when that segment ends (its first sighting was reported under the old id), and when its best shot falls
    in the segment's first second the subscriber could not tell it from a late first sighting.
    """
    out: dict[str, Any] = {"report_first_sighting": True, "track_max_missed_s": 3, "track_max_age_s": 3600}
    for key, value in DETECTION_OVERRIDES.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def scrape(http_port: int) -> dict[str, float]:
    """The agent's /metrics, summed over labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (MB) and CPU seconds (user + system, all threads) of a process."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024.0
    with open(f"/proc/{pid}/stat") as f:
        fields_ = f.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields_[11]) + int(fields_[12])) / CLK_TCK
    return out


def servers_cpu(servers: list[Any]) -> float:
    return sum(proc_status(s.proc.pid)["cpu_s"] for s in servers if s.proc is not None)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]


@dataclass
class Step:
    cameras: int
    passed: bool = False
    reason: str = ""
    frames_expected: float = 0.0
    frames_detected: float = 0.0
    frames_sampled: float = 0.0
    frames_decoded: float = 0.0
    dropped: float = 0.0
    lag_mean_s: float = 0.0
    lag_max_s: float = 0.0
    mean_batch: float = 0.0
    detector_busy_pct: float = 0.0
    targets: int = 0
    latency_p50_ms: float = float("nan")
    latency_p99_ms: float = float("nan")
    latency_max_ms: float = float("nan")
    rss_mb: float = 0.0
    rss_peak_mb: float = 0.0
    agent_cpu_pct: float = 0.0
    rtsp_server_cpu_pct: float = 0.0
    reconnects: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        d = {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items() if k != "extra"
        }
        d.update(self.extra)
        return d


def run_step(n: int, clip: Path, gop: int, work: Path, mqtt: Mosquitto, warmup: float, window: float) -> Step:

    step = Step(cameras=n)
    data = work / f"data-{n}"
    http_port = free_port()
    site = work / f"site-{n}.yaml"
    servers: list[RtspFileServer | GstFileServer] = []
    urls: list[str] = []
    per_server = n if SERVER["kind"] == "gst" else CAMERAS_PER_SERVER
    for g in range(0, n, per_server):
        serve = work / f"serve-{n}-{g}"
        serve.mkdir()
        server = GstFileServer(serve) if SERVER["kind"] == "gst" else RtspFileServer(serve)
        servers.append(server)
        for i in range(g, min(n, g + per_server)):
            # camera i starts (i * 29) s into the 79 s clip: distinct starts, neighbours far apart
            rotated_copy(clip, serve / f"cam{i + 1:03d}.mkv", float((i * 29) % 79), (i * 0.618) % 1.0)
            urls.append(server.url(f"cam{i + 1:03d}.mkv"))
    for server in servers:
        server.start()
    site.write_text(yaml.safe_dump(site_yaml(urls, mqtt.port, http_port, data, gop), sort_keys=False))
    sub = Subscriber(mqtt.port, "vcs-edge/capacity/targets/#")
    sub.start()
    agent_log = (work / f"agent-{n}.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "-c", str(site)],
        cwd=ROOT,
        stdout=agent_log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        # wait for all streams online
        deadline = time.monotonic() + 60
        online = 0.0
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.returncode}; see {agent_log.name}")
            try:
                m = scrape(http_port)
                online = m.get("vcs_edge_stream_status", 0.0)
                if online >= n and m.get("vcs_edge_analytics_frames_detected_total", 0.0) > 0:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            agent_log.flush()
            tail = (work / f"agent-{n}.log").read_text(errors="replace").splitlines()[-15:]
            log("agent log tail:\n" + "\n".join(tail))
            step.reason = f"{online:.0f} of {n} streams online after 60 s"
            return step
        time.sleep(warmup)
        m0, p0, s0 = scrape(http_port), proc_status(agent.pid), servers_cpu(servers)
        t0 = time.time()
        lag_max = 0.0
        while time.time() - t0 < window:
            time.sleep(0.5)
            lag_max = max(lag_max, scrape(http_port).get("vcs_edge_analytics_detect_lag_seconds", 0.0))
        m1, p1, s1 = scrape(http_port), proc_status(agent.pid), servers_cpu(servers)
        t1 = time.time()
        elapsed = t1 - t0
        time.sleep(2.0)  # let targets captured near the end of the window arrive

        def d(name: str) -> float:
            return m1.get(name, 0.0) - m0.get(name, 0.0)

        step.frames_expected = n * elapsed / SPF
        step.frames_detected = d("vcs_edge_analytics_frames_detected_total")
        step.frames_sampled = d("vcs_edge_stream_frames_sampled_total")
        step.frames_decoded = d("vcs_edge_stream_frames_decoded_total")
        step.dropped = d("vcs_edge_analytics_frames_dropped_total") + d("vcs_edge_stream_drops_total")
        step.reconnects = d("vcs_edge_stream_reconnects_total")
        step.lag_mean_s = d("vcs_edge_analytics_detect_lag_seconds_total") / max(1.0, step.frames_detected)
        step.lag_max_s = lag_max
        batches = d("vcs_edge_detect_batches_total")
        step.mean_batch = d("vcs_edge_detect_frames_total") / batches if batches else 0.0
        step.detector_busy_pct = 100.0 * d("vcs_edge_detect_busy_seconds_total") / elapsed
        step.agent_cpu_pct = 100.0 * (p1["cpu_s"] - p0["cpu_s"]) / elapsed
        step.rtsp_server_cpu_pct = 100.0 * (s1 - s0) / elapsed
        step.rss_mb = p1.get("VmRSS", 0.0)
        step.rss_peak_mb = p1.get("VmHWM", 0.0)
        lat = sub.latencies_ms(t0, t1)
        step.targets = len(lat)
        if lat:
            step.latency_p50_ms = statistics.median(lat)
            step.latency_p99_ms = pct(lat, 99)
            step.latency_max_ms = max(lat)
        step.extra = {"later_reports": sub.later, "window_s": round(elapsed, 1)}
        reasons = []
        if step.dropped > 0:
            reasons.append(f"{step.dropped:.0f} frames dropped")
        if step.frames_sampled < MIN_DETECTED_FRACTION * step.frames_expected:
            reasons.append(f"sampled {step.frames_sampled:.0f} of {step.frames_expected:.0f} frames")
        if step.frames_detected < step.frames_sampled - n / SPF:
            reasons.append(f"detected {step.frames_detected:.0f} of {step.frames_sampled:.0f} sampled frames")
        if step.lag_max_s >= MAX_LAG_S:
            reasons.append(f"detector lag reached {step.lag_max_s:.2f} s")
        if not lat:
            reasons.append("no first sighting reached the broker")
        elif step.latency_p99_ms >= TARGET_P99_MS:
            reasons.append(f"capture -> broker p99 {step.latency_p99_ms:.0f} ms")
        step.passed = not reasons
        step.reason = "; ".join(reasons)
    finally:
        stop_proc(agent, 20)
        agent_log.close()
        sub.stop()
        for server in servers:
            server.stop()
            shutil.rmtree(server.folder, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    return step


def search(
    clip: Path,
    gop: int,
    work: Path,
    mqtt: Mosquitto,
    warmup: float,
    window: float,
    budget_s: float,
    first: int,
    stride: int,
    only: list[int] | None = None,
) -> tuple[Step, list[Step]]:
    started = time.monotonic()
    steps: list[Step] = []

    def run(n: int) -> Step:
        log(f"step: {n} cameras (GOP {gop})")
        s = run_step(n, clip, gop, work, mqtt, warmup, window)
        steps.append(s)
        log(
            f"  {n} cameras: {'PASS' if s.passed else 'FAIL ' + s.reason}; detected {s.frames_detected:.0f}"
            f"/{s.frames_expected:.0f}, lag mean {s.lag_mean_s:.2f} s max {s.lag_max_s:.2f} s, batch "
            f"{s.mean_batch:.1f}, busy {s.detector_busy_pct:.0f}%, agent CPU {s.agent_cpu_pct:.0f}%, rtsp-server "
            f"CPU {s.rtsp_server_cpu_pct:.0f}%, targets {s.targets} p50 {s.latency_p50_ms:.0f} ms p99 "
            f"{s.latency_p99_ms:.0f} ms, RSS {s.rss_mb:.0f} MB (peak {s.rss_peak_mb:.0f})"
        )
        return s

    if only:
        for n in only:
            run(n)
        passed = [s for s in steps if s.passed]
        return (max(passed, key=lambda s: s.cameras) if passed else Step(cameras=0)), steps
    baseline = run(1)
    last_pass = baseline if baseline.passed else None
    first_fail: Step | None = None
    n = first
    per_step = time.monotonic() - started
    while time.monotonic() - started + per_step * 1.3 < budget_s:
        s = run(n)
        if s.passed:
            last_pass = s
            n += stride
        else:
            first_fail = s
            break
    while first_fail is not None and last_pass is not None and first_fail.cameras - last_pass.cameras > 2:
        if time.monotonic() - started + per_step * 1.3 >= budget_s:
            break
        mid = (first_fail.cameras + last_pass.cameras) // 2
        s = run(mid)
        if s.passed:
            last_pass = s
        else:
            first_fail = s
    return (last_pass or Step(cameras=0, reason="no step passed")), steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    ap.add_argument(
        "--gop", type=int, default=10, help="GOP of the footage in frames at 10 fps (default 10 = 1 s)"
    )
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--budget", type=float, default=540.0, help="stop starting steps after this many seconds")
    ap.add_argument("--first", type=int, default=8, help="first N after the 1-camera baseline")
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument(
        "--detection",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a detection setting of the generated site (e.g. face.input_width=480); default none",
    )
    ap.add_argument("--only", type=int, nargs="*", help="run just these camera counts (no search)")
    ap.add_argument(
        "--server",
        choices=("auto", "gst", "aio"),
        default="auto",
        help="the cameras' RTSP server: gst-rtsp-server (C, default where Debian's python3-gi has it) or "
        "aio-rtsp-toolkit (Python, the demo's; 5 cameras per process)",
    )
    args = ap.parse_args(argv)
    if args.server == "gst" and not gst_available():
        ap.error(f"--server gst: {SYSTEM_PYTHON} has no gst-rtsp-server; apt-get install {GST_PACKAGES}")
    SERVER["kind"] = "gst" if args.server == "gst" or (args.server == "auto" and gst_available()) else "aio"
    if SERVER["kind"] == "aio" and args.server == "auto":
        log(
            f"no gst-rtsp-server for {SYSTEM_PYTHON} (apt-get install {GST_PACKAGES}): serving with aio-rtsp-toolkit"
        )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop agent and peers

    for item in args.detection:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--detection wants KEY=VALUE, got {item!r}")
        DETECTION_OVERRIDES[key.strip()] = yaml.safe_load(value)
    clip = make_clip(args.gop)
    work = Path(tempfile.mkdtemp(prefix="vcs-capacity-"))
    mqtt = Mosquitto(work)
    mqtt.start()
    try:
        best, steps = search(
            clip,
            args.gop,
            work,
            mqtt,
            args.warmup,
            args.window,
            args.budget,
            args.first,
            args.stride,
            args.only,
        )
    finally:
        mqtt.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = steps[0]
    at_target = next((s for s in steps if s.cameras == TARGET_CAMERAS), None)
    judged = at_target if at_target is not None else best
    result: dict[str, Any] = {
        "bench": "capacity",
        "cameras": best.cameras,
        "latency_p50_ms": round(best.latency_p50_ms, 1),
        "latency_p99_ms": round(best.latency_p99_ms, 1),
        "rss_mb": round(best.rss_mb, 1),
        "rss_peak_mb": round(best.rss_peak_mb, 1),
        "footage": f"vtest 768x576 {FPS} fps H.264 GOP {args.gop} ({args.gop / FPS:g} s) over RTSP/TCP, Spf={SPF:g}",
        "rtsp_server": "gst-rtsp-server" if SERVER["kind"] == "gst" else "aio-rtsp-toolkit",
        "detection_overrides": dict(DETECTION_OVERRIDES),
        "targets": {"cameras": TARGET_CAMERAS, "p99_ms": TARGET_P99_MS, "rss_mb": TARGET_RSS_MB},
        # the targets are one load: TARGET_CAMERAS cameras within the latency and the memory; judged on the step
        # of that many cameras when the search ran one (it does: 8 + 4k), else on the best step
        "at_target": at_target.row() if at_target is not None else None,
        "meets_targets": best.cameras >= TARGET_CAMERAS
        and judged.passed
        and judged.latency_p99_ms < TARGET_P99_MS
        and judged.rss_mb < TARGET_RSS_MB,
        "baseline_1cam": {
            "latency_p50_ms": round(base.latency_p50_ms, 1),
            "latency_p99_ms": round(base.latency_p99_ms, 1),
            "rss_mb": round(base.rss_mb, 1),
            "agent_cpu_pct": round(base.agent_cpu_pct, 1),
        },
        "rss_ratio_vs_1cam": round(best.rss_mb / base.rss_mb, 2) if base.rss_mb else None,
        "p99_ratio_vs_1cam": round(best.latency_p99_ms / base.latency_p99_ms, 2)
        if base.latency_p99_ms == base.latency_p99_ms and base.latency_p99_ms > 0
        else None,
        "cpu_pct_per_camera": round((best.agent_cpu_pct - base.agent_cpu_pct) / (best.cameras - 1), 2)
        if best.cameras > 1
        else None,
        "first_failing": next((s.row() for s in steps if not s.passed and s.cameras > best.cameras), None),
        "steps": [s.row() for s in steps],
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if not args.json:
        for s in steps:
            print(f"{s.cameras:3d} cameras: {'pass' if s.passed else 'FAIL'} {s.reason}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
