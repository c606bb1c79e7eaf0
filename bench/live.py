"""WebRTC live view: many viewers of one camera, the agent's CPU per viewer, and the time to the first frame.

The agent runs as its own process (``vcs-edge run``) on one continuous RTSP camera (vtest 768x576, 10 fps, 1 s
GOP, served by aio-rtsp-toolkit's rtsp-server); this process is the viewers: aiortc peer connections that post
their offers to the agent's signed ``/webrtc/{camera}`` link (signed here with the agent's own key from its data
directory) and decode what they receive, as a browser does.

- ``first_frame_ms``: per viewer, from the offer's POST to its first decoded frame; p50 (and p90) over viewers,
  connected one after the other on a stream that is already open.
- ``cpu_per_viewer_pct``: the agent process's CPU (user + system, /proc) over a window with all viewers
  connected, minus the same window with none, divided by the viewers, in % of one core.
- ``encoders_opened``: aiortc encoders the agent opened (0: the H.264 was passed through), from its /metrics.

Targets: cpu_per_viewer_pct <= 2, first_frame_ms <= 1500.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from agent.demo import RtspFileServer
from bench.capacity import CLK_TCK, free_port, make_clip, proc_status, stop_proc, wait_listening

CAM = "34020000001320000401"


def log(msg: str) -> None:
    print(f"[bench.live] {msg}", file=sys.stderr, flush=True)


def metric(http_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


def cpu_window(pid: int, seconds: float) -> float:
    """% of one core the process used over ``seconds``."""
    a = proc_status(pid)["cpu_s"]
    t0 = time.monotonic()
    time.sleep(seconds)
    b = proc_status(pid)["cpu_s"]
    return 100.0 * (b - a) / (time.monotonic() - t0)


async def viewer(url: str, first: list[float], pcs: list[Any], frames: dict[int, int]) -> None:
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection()
    pcs.append(pc)
    idx = len(pcs) - 1
    frames[idx] = 0
    pc.addTransceiver("video", direction="recvonly")
    got_first = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def read() -> None:
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                frames[idx] += 1
                if not got_first.done():
                    got_first.set_result(time.monotonic())

        pc._bench_reader = asyncio.ensure_future(read())

    await pc.setLocalDescription(await pc.createOffer())
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r,
    ):
        if r.status != 201:
            raise RuntimeError(f"offer refused: {r.status} {await r.text()}")
        answer = await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    t1 = await asyncio.wait_for(got_first, 20)
    first.append(1000.0 * (t1 - t0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--window-s", type=float, default=10.0)
    args = ap.parse_args()

    from agent.ingest.live_webrtc import _restrict_ice_hosts
    from agent.storage.links import LinkMaker, LinkSigner, load_or_create_key

    _restrict_ice_hosts(["127.0.0.1"])  # the viewers are on the box's loopback too

    work = Path(tempfile.mkdtemp(prefix="vcs-edge-bench-live-"))
    clip = make_clip(10)
    media = work / "media"
    media.mkdir()
    shutil.copyfile(clip, media / "cam.mkv")  # the RTSP server does not follow links
    rtsp = RtspFileServer(media)
    rtsp.start()
    http_port = free_port()
    data = work / "data"
    site = {
        "site": {"name": "bench-live"},
        "agent": {"data_dir": str(data), "http": {"host": "127.0.0.1", "port": http_port}},
        "streams": {"mode": 1},
        "devices": [
            {"id": CAM, "name": "bench camera", "stream": {"main": rtsp.url("cam.mkv"), "transport": "tcp"}}
        ],
        "console": {"max_viewers": max(32, args.viewers + 2)},
    }
    (work / "site.yaml").write_text(yaml.safe_dump(site))
    exe = Path(sys.executable).with_name("vcs-edge")
    agent = subprocess.Popen(
        [str(exe), "run", "-c", str(work / "site.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=(work / "agent.log").open("wb"),
    )
    result: dict[str, Any] = {}
    try:
        wait_listening(http_port, agent, "agent", timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and metric(http_port, "vcs_edge_stream_packets_total") < 30:
            time.sleep(0.5)
        if metric(http_port, "vcs_edge_stream_packets_total") < 30:
            raise RuntimeError(f"the camera does not stream; see {work / 'agent.log'}")
        links = LinkMaker(LinkSigner(load_or_create_key(data)), lambda: f"http://127.0.0.1:{http_port}")
        url = links.url("webrtc", CAM)
        log(f"baseline: {args.window_s:g} s with no viewer")
        base = cpu_window(agent.pid, args.window_s)

        async def run() -> dict[str, Any]:
            first: list[float] = []
            pcs: list[Any] = []
            frames: dict[int, int] = {}
            for _ in range(args.viewers):
                await viewer(url, first, pcs, frames)
            log(f"{len(pcs)} viewers connected; first frames {[round(x) for x in first]} ms")
            before = dict(frames)
            loaded = await asyncio.to_thread(cpu_window, agent.pid, args.window_s)
            receiving = sum(1 for i in frames if frames[i] > before[i])
            out = {
                "viewers": receiving,
                "viewers_connected": len(pcs),
                "first_frame_ms": round(statistics.median(first), 1),
                "first_frame_p90_ms": round(sorted(first)[int(0.9 * (len(first) - 1))], 1),
                "agent_cpu_pct_idle": round(base, 2),
                "agent_cpu_pct_loaded": round(loaded, 2),
                "cpu_per_viewer_pct": round((loaded - base) / max(1, len(pcs)), 3),
                "frames_per_viewer_s": round(
                    sum(frames[i] - before[i] for i in frames) / max(1, len(frames)) / args.window_s, 2
                ),
            }
            for pc in pcs:
                await pc.close()
            return out

        result = asyncio.run(run())
        result["encoders_opened"] = metric(http_port, "vcs_edge_webrtc_encoders_opened")
        result["agent_rss_mb"] = round(proc_status(agent.pid)["VmRSS"], 1)
        result["clk_tck"] = CLK_TCK
        result["ok"] = result["cpu_per_viewer_pct"] <= 2 and result["first_frame_ms"] <= 1500
    finally:
        stop_proc(agent)  # type: ignore[arg-type]
        rtsp.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
