"""StreamManager against a real gst-rtsp-server: on-demand sessions, continuous mode, snapshots, drops."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from agent.config.enums import StreamMode
from agent.ingest.streams import SnapshotTimeout, StreamManager, UnknownDevice
from pipelines.frames import Frame
from pipelines.sampling import Sampler
from pipelines.sources import AccessUnit, SourceSpec
from tests.peers import RtspServer, rtsp_server

pytestmark = pytest.mark.peer


@pytest.fixture
def live() -> Iterator[RtspServer]:
    with rtsp_server(fps=25, gop=25) as server:
        yield server


def spec(url: str, **kw: object) -> SourceSpec:
    return SourceSpec(url, transport="tcp", stall_timeout_s=3, backoff_base_s=0.2, backoff_cap_s=1, **kw)  # type: ignore[arg-type]


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stream-")]


def test_on_demand_opens_only_while_a_consumer_is_attached(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.5)
        mgr.add_device("cam1", spec(live.url), StreamMode.ON_DEMAND)
        await asyncio.sleep(1.5)
        assert live.connects == 0 and live.sessions == 0  # outside the window: no session at the server
        assert not mgr.is_open("cam1")

        got: list[Frame] = []
        mgr.attach("cam1", "inst-a", Sampler(fps=5), got.append)  # the instance's window opens
        assert await until(lambda: len(got) >= 5, 20), mgr.stats("cam1")
        assert live.sessions == 1 and live.open_connections == 1
        assert all(f.instance_ids == ("inst-a",) and f.device_id == "cam1" for f in got)

        mgr.detach("cam1", "inst-a")  # the window closes
        assert await until(lambda: live.open_connections == 0, 5)
        assert not mgr.is_open("cam1")
        await asyncio.sleep(1.5)
        assert live.connects == 1  # nothing reconnects while no one is attached

        mgr.attach("cam1", "inst-a", Sampler(fps=5), got.append)  # the next window
        assert await until(lambda: live.sessions == 2, 10)
        assert await mgr.close()

    asyncio.run(main())


def test_idle_timeout_keeps_the_session_across_a_quick_reattach(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=3.0)
        mgr.add_device("cam1", spec(live.url))
        got: list[Frame] = []
        mgr.attach("cam1", "a", Sampler(fps=5), got.append)
        assert await until(lambda: len(got) >= 2, 20)
        mgr.detach("cam1", "a")
        await asyncio.sleep(0.5)
        mgr.attach("cam1", "b", Sampler(fps=5), got.append)
        n = len(got)
        assert await until(lambda: len(got) >= n + 3, 10)
        assert live.connects == 1
        assert await mgr.close()
        assert await until(lambda: live.open_connections == 0, 5)

    asyncio.run(main())


def test_continuous_mode_is_open_without_consumers_and_snapshot_is_fresh(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.2)
        mgr.add_device("cam1", spec(live.url), StreamMode.CONTINUOUS)
        assert await until(lambda: live.sessions == 1, 10)
        assert await until(lambda: mgr.stats("cam1").status == "streaming", 10)
        asked = datetime.now(UTC)
        frame = await mgr.snapshot("cam1", timeout=10)
        assert frame.captured_at >= asked and frame.image.shape == (240, 320, 3)
        assert frame.instance_ids == ()
        await asyncio.sleep(1.0)  # far beyond the idle timeout: continuous streams stay open
        assert live.open_connections == 1 and mgr.is_open("cam1")
        mgr.update_device("cam1", mode=StreamMode.ON_DEMAND)
        assert await until(lambda: live.open_connections == 0, 5)
        assert await mgr.close()

    asyncio.run(main())


def test_snapshot_opens_an_on_demand_stream_and_lets_it_close(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.3)
        mgr.add_device("cam1", spec(live.url))
        frame = await mgr.snapshot("cam1", timeout=15)
        assert frame.device_id == "cam1"
        assert live.sessions == 1
        assert await until(lambda: live.open_connections == 0, 5)
        assert mgr.consumers("cam1") == []
        assert await mgr.close()

    asyncio.run(main())


def test_snapshot_timeout_says_why() -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.1)
        mgr.add_device("dead", SourceSpec("rtsp://127.0.0.1:9/none", open_timeout_s=1, backoff_base_s=0.1))
        with pytest.raises(SnapshotTimeout, match="dead"):
            await mgr.snapshot("dead", timeout=1.5)
        assert mgr.stats("dead").last_error
        assert await mgr.close()

    asyncio.run(main())


def test_slow_consumer_loses_old_frames_counted_and_never_stalls_the_stream(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.2, frame_queue=2)
        mgr.add_device("cam1", spec(live.url))
        slow: list[Frame] = []
        fast: list[Frame] = []

        async def slow_cb(frame: Frame) -> None:
            slow.append(frame)
            await asyncio.sleep(0.5)

        mgr.attach("cam1", "slow", Sampler(fps=25), slow_cb)
        mgr.attach("cam1", "fast", Sampler(fps=25), fast.append)
        assert await until(lambda: len(fast) >= 50, 20)
        st = mgr.stats("cam1")
        assert st.drops > 0
        assert len(slow) < len(fast) / 3
        seqs = [f.seq for f in slow]
        assert seqs == sorted(seqs) and seqs[-1] > len(slow) + 5  # it got recent frames, not a backlog
        assert await mgr.close()

    asyncio.run(main())


def test_packets_and_frames_share_one_pull(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.2)
        mgr.add_device("cam1", spec(live.url))
        units: list[AccessUnit] = []
        frames: list[Frame] = []
        mgr.attach("cam1", "gb-live", "packets", units.append)
        mgr.attach("cam1", "inst", Sampler(spf=1), frames.append)
        assert await until(lambda: len(frames) >= 2 and len(units) >= 30, 20)
        assert live.sessions == 1
        assert any(u.keyframe for u in units) and all(u.codec == "h264" for u in units)
        assert await mgr.close()

    asyncio.run(main())


def test_update_device_switches_url_without_dropping_consumers(live: RtspServer) -> None:
    with rtsp_server(fps=25, gop=25, mount="/other") as other:

        async def main() -> None:
            mgr = StreamManager(idle_timeout_s=0.2)
            mgr.add_device("cam1", spec(live.url), StreamMode.CONTINUOUS)
            got: list[Frame] = []
            mgr.attach("cam1", "inst", Sampler(fps=5), got.append)
            assert await until(lambda: len(got) >= 3, 20)
            mgr.update_device("cam1", spec(other.url))
            assert await until(lambda: other.sessions == 1, 10)
            n = len(got)
            assert await until(lambda: len(got) >= n + 3, 10)
            assert await until(lambda: live.open_connections == 0, 10)
            assert mgr.consumers("cam1") == ["inst"]
            assert await mgr.close()

        asyncio.run(main())


def test_close_stops_every_thread(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager()
        for i in range(3):
            mgr.add_device(f"cam{i}", spec(live.url), StreamMode.CONTINUOUS)
        assert await until(lambda: all(mgr.stats(f"cam{i}").status == "streaming" for i in range(3)), 20)
        assert await mgr.close(timeout=2.0)
        assert stream_threads() == []
        with pytest.raises(RuntimeError):
            mgr.add_device("late", spec(live.url))

    asyncio.run(main())


def test_bad_calls_get_clear_errors() -> None:
    async def main() -> None:
        mgr = StreamManager()
        with pytest.raises(UnknownDevice):
            mgr.attach("nope", "x", Sampler(spf=1), lambda f: None)
        mgr.add_device("cam", SourceSpec("rtsp://127.0.0.1:9/x"))
        with pytest.raises(ValueError):
            mgr.add_device("cam", SourceSpec("rtsp://127.0.0.1:9/x"))
        with pytest.raises(TypeError):
            mgr.attach("cam", "x", "frames", lambda f: None)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            mgr.add_device("cam2", SourceSpec("rtsp://127.0.0.1:9/x"), mode=7)
        assert not mgr.detach("cam", "never-attached")
        assert await mgr.close()

    asyncio.run(main())
