"""Camera stream sources: one PyAV demux/decode thread per open stream, feeding frame and packet consumers.

Why a thread and not asyncio: PyAV's demux and decode are blocking C calls that release the GIL, so one
thread per stream uses the cores while the asyncio loop stays responsive. The thread never blocks on its
consumers: callbacks must hand the work off (the stream manager pushes into bounded newest-wins queues).

A stream that fails, ends or stalls reconnects with capped exponential backoff and full jitter. Stalls are
detected, not waited out: PyAV's read timeout interrupts a blocked read after ``stall_timeout_s`` (ffmpeg's
interrupt callback, plus the protocol's own socket timeout), a stream whose other tracks flow but whose
video stops is cut in the loop, and a watchdog abandons a worker stuck where no interrupt reaches (DNS
lookups) and starts a fresh one. The watchdog does not close the container from its own thread: freeing an
AVFormatContext while ``av_read_frame`` runs in another thread is a use-after-free in ffmpeg.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import av
import av.bitstream
import av.error
import numpy as np
import numpy.typing as npt

from pipelines.annexb import AccessUnit as AccessUnit  # the one type; re-exported for existing imports
from pipelines.feeds import FeedEnded, PacketFeed, open_feed
from pipelines.frames import Frame
from pipelines.sampling import GopEstimator, Sampler, plan
from pipelines.source_bounds import (
    HTTP_SCHEMES,
    MAX_ANALYZE_US,
    MAX_PROBE_BYTES,
    BoundedHttp,
    SourceRefused,
    cap_ffmpeg_allocations,
    no_answer,
    rtsp_diagnose,
)
from pipelines.urls import SourceKind, UnsupportedSource, source_kind

log = logging.getLogger(__name__)

Transport = Literal["tcp", "udp", "auto"]
Status = Literal["connecting", "streaming", "backoff", "stopped"]

PTS_CLOCK_HZ = 90_000
# Packets held for on-demand decoding before they are decoded anyway (bounds memory on endless GOPs).
MAX_PENDING_PACKETS = 512
# The GOP cache (packets since the last keyframe, replayed to a packet consumer that asks for it when it
# attaches) stops holding a GOP longer or bigger than this (a 4 s GOP at 16 Mbit/s is 8 MB); that consumer then
# starts at the next keyframe. The packets are the ones demuxed anyway: the cache holds references, no copies.
MAX_GOP_CACHE_PACKETS = 512
MAX_GOP_CACHE_BYTES = 8 << 20


# Open failures whose ffmpeg text says nothing useful (a silent port reads as "Invalid data found").
_OPAQUE_OPEN_ERRORS = (
    av.error.InvalidDataError,
    av.error.UndefinedError,
    av.error.EOFError,
    PermissionError,
    MemoryError,
)


def _non_hls_demuxers() -> str:
    """ffmpeg's ``format_whitelist`` for HTTP streams that are not HLS: every input format but ``hls``."""
    return ",".join(sorted(name for name in av.formats_available if name != "hls"))


class StreamStall(RuntimeError):
    """No video packet arrived for ``stall_timeout_s``."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How to pull one camera stream. Plain data; the agent's config is mapped onto it by the caller.

    ``realtime`` paces reading to the stream clock and ``loop`` restarts at the end; ``None`` means "yes for
    files, no for network streams" (a file standing in for a camera plays like one). ``gop_s`` is a declared
    GOP used until one is measured. ``options`` go to ffmpeg as-is and win over the derived ones.
    """

    url: str
    transport: Transport = "auto"
    open_timeout_s: float = 10.0
    stall_timeout_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    options: Mapping[str, str] = field(default_factory=dict)
    gop_s: float | None = None
    realtime: bool | None = None
    loop: bool | None = None

    def __post_init__(self) -> None:
        source_kind(self.url)
        if self.transport not in ("tcp", "udp", "auto"):
            raise UnsupportedSource(f"transport must be 'tcp', 'udp' or 'auto', got {self.transport!r}")
        for name in ("open_timeout_s", "stall_timeout_s", "backoff_base_s", "backoff_cap_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be >= backoff_base_s")
        if self.gop_s is not None and not (math.isfinite(self.gop_s) and self.gop_s > 0):
            raise ValueError(f"gop_s must be a positive number of seconds, got {self.gop_s!r}")

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.url)

    @property
    def paced(self) -> bool:
        return self.kind == "file" if self.realtime is None else self.realtime

    @property
    def loops(self) -> bool:
        return self.kind == "file" if self.loop is None else self.loop

    def open_target(self) -> str:
        """What to hand to ``av.open``: file URLs become paths."""
        url = self.url.strip()
        if url.lower().startswith("file://"):
            return urlsplit(url).path
        return url

    def av_options(self) -> dict[str, str]:
        """ffmpeg options: transport, socket timeouts (microseconds) and probe bounds, then user options."""
        kind = self.kind
        stall_us = str(int(self.stall_timeout_s * 1_000_000))
        opts: dict[str, str] = {}
        if kind == "rtsp":
            if self.transport != "auto":
                opts["rtsp_transport"] = self.transport
            opts["timeout"] = stall_us  # socket I/O timeout (was "stimeout" before ffmpeg 5)
        elif kind in ("rtmp", "hls", "http-flv", "http"):
            opts["rw_timeout"] = stall_us
        if kind != "file":  # bytes and stream time one open may read to find the stream parameters
            opts["probesize"] = str(MAX_PROBE_BYTES)
            opts["analyzeduration"] = str(MAX_ANALYZE_US)
        opts.update({str(k): str(v) for k, v in self.options.items()})
        return opts


class _FeedStream:
    """What ``_session`` reads of a container's video stream, for a pushed feed."""

    index = 0

    def __init__(self, codec: str) -> None:
        self.codec_context: Any = av.CodecContext.create(codec, "r")
        self.time_base = Fraction(1, PTS_CLOCK_HZ)


class _FeedStreams:
    def __init__(self, video: _FeedStream) -> None:
        self.video = [video]


class _FeedContainer:
    """A :class:`~pipelines.feeds.PacketFeed` dressed as a PyAV input container: ``demux()`` yields packets
    made from its access units (Annex B, 90 kHz), decoded by a plain codec context. The open waits for the
    first unit (it names the codec); a stall raises :class:`StreamStall`, the feed's end ends the stream."""

    def __init__(self, feed: PacketFeed, stop: threading.Event, spec: SourceSpec, deadline: float) -> None:
        self.feed = feed
        self._stop = stop
        self._stall = spec.stall_timeout_s
        first: AccessUnit | None = None
        try:
            while first is None:
                if stop.is_set():
                    raise SourceRefused("stopped while opening")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceRefused(no_answer(spec.open_timeout_s, "no media from the device"))
                first = feed.get(min(0.5, left))
        except FeedEnded as exc:
            feed.close()
            raise SourceRefused(str(exc)) from None
        except BaseException:
            feed.close()
            raise
        self._first: AccessUnit | None = first
        self.streams = _FeedStreams(_FeedStream("hevc" if first.codec in ("hevc", "h265") else "h264"))

    def demux(self) -> Iterator[av.Packet[Any]]:
        last = time.monotonic()
        while not self._stop.is_set():
            unit = self._first
            self._first = None
            if unit is None:
                try:
                    unit = self.feed.get(0.5)
                except FeedEnded:
                    return
            if unit is None:
                if time.monotonic() - last > self._stall:
                    raise StreamStall(f"no video from the device for {self._stall:g} s")
                continue
            last = time.monotonic()
            pkt: av.Packet[Any] = av.Packet(unit.data)
            pkt.pts = unit.pts_90k
            pkt.dts = unit.dts_90k if unit.dts_90k is not None else unit.pts_90k
            pkt.time_base = Fraction(1, PTS_CLOCK_HZ)
            pkt.is_keyframe = unit.keyframe
            yield pkt

    def close(self) -> None:
        self.feed.close()


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)).

    Full jitter spreads the reconnects of many cameras behind one failed NVR instead of hammering it in step.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = cap if attempt >= 63 else min(cap, base * (2.0**attempt))
    return max(0.0, min(ceiling, rand() * ceiling))


@dataclass(slots=True)
class StreamStats:
    """Plain counters for one source, written by its worker thread; exported to Prometheus by the agent."""

    packets: int = 0
    bytes: int = 0
    keyframes: int = 0
    frames_decoded: int = 0
    frames_sampled: int = 0
    drops: int = 0
    decode_errors: int = 0
    consumer_errors: int = 0
    reconnects: int = 0
    connects: int = 0
    stalls: int = 0
    last_packet_monotonic: float | None = None
    status: Status = "stopped"
    last_error: str | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    gop_s: float | None = None
    keyframes_only: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_drops(self, n: int = 1) -> None:
        """Count frames or packets dropped by a consumer queue (called from the consumer's side)."""
        with self._lock:
            self.drops += n

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


FrameCallback = Callable[[Frame], None]
PacketCallback = Callable[[AccessUnit], None]
StatusCallback = Callable[[str, str | None], None]


@dataclass(slots=True)
class _FrameConsumer:
    consumer_id: str
    sampler: Sampler
    callback: FrameCallback
    shapes_decode: bool
    label: str | None


@dataclass(slots=True)
class _PacketConsumer:
    consumer_id: str
    callback: PacketCallback
    replay_gop: bool = False  # cleared by the worker once the cached GOP went out


class _Run:
    """One generation of the worker: its thread, stop flag and progress stamp for the watchdog."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.wake = threading.Event()  # cuts a backoff wait short (spec update)
        self.progress = time.monotonic()
        self.thread: threading.Thread | None = None


_H264_PARAM_NALS = {7, 8}
_HEVC_PARAM_NALS = {32, 33, 34}


def _nal_types(data: bytes, codec: str) -> Iterator[int]:
    """NAL unit types of an Annex-B buffer."""
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        header = data[pos + 3]
        yield (header & 0x1F) if codec == "h264" else ((header >> 1) & 0x3F)
        pos = data.find(b"\x00\x00\x01", pos + 3)


def is_annexb(extradata: bytes | None) -> bool:
    """Whether codec extradata is Annex-B (RTSP, TS) rather than avcC/hvcC (MP4, MKV, FLV)."""
    if not extradata:
        return True
    return extradata.startswith(b"\x00\x00\x01") or extradata.startswith(b"\x00\x00\x00\x01")


class _TimestampFill:
    """Gives a packet without pts or dts (ffmpeg's RTSP demuxer yields a few) the time of the frame after the
    last one, in the stream's time base, before anyone reads it: as 0 a recorder read it as the camera's clock
    jumping back (and cut its session), and the sampler as a frame from the start of the stream."""

    def __init__(self, time_base: Fraction) -> None:
        self._one_second = 1 / time_base if time_base else Fraction(PTS_CLOCK_HZ)
        self._last: int | None = None
        self._step = 0

    def fill(self, packet: av.Packet[Any]) -> int | None:
        """The packet's timestamp (pts, else dts), set on the packet when it had none and one can be told."""
        ts = packet.pts if packet.pts is not None else packet.dts
        last = self._last
        if ts is None:
            if last is None:
                return None
            ts = packet.pts = last + self._step
        elif last is not None and 0 < ts - last < self._one_second:
            self._step = ts - last
        if last is None or ts > last:
            self._last = ts
        return ts


class _AnnexBWriter:
    """Turns demuxed packets of one stream into Annex-B access units with parameter sets on keyframes."""

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        self.codec = stream.codec_context.name
        self.time_base: Fraction = stream.time_base or Fraction(1, PTS_CLOCK_HZ)
        extradata = stream.codec_context.extradata
        self._bsf: av.bitstream.BitStreamFilterContext | None = None
        self._params = b""
        if self.codec in ("h264", "hevc"):
            if is_annexb(extradata):
                self._params = extradata or b""
            else:
                name = "h264_mp4toannexb" if self.codec == "h264" else "hevc_mp4toannexb"
                self._bsf = av.bitstream.BitStreamFilterContext(name, in_stream=stream)

    def _pts90(self, ts: int | None, fallback: int) -> int:
        if ts is None:
            return fallback
        return round(ts * self.time_base * PTS_CLOCK_HZ)

    def convert(self, packet: av.Packet[Any], received_ms: int | None = None) -> list[AccessUnit]:
        """Access units for one demuxed packet; ``packet`` itself is left intact for the decoder."""
        key = bool(packet.is_keyframe)
        ts = packet.pts if packet.pts is not None else packet.dts
        pts90 = self._pts90(ts, 0)
        if self._bsf is not None:
            # av_bsf_send_packet takes the packet's data: filter a copy.
            copy: av.Packet[Any] = av.Packet(bytes(packet))
            copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
            copy.is_keyframe = key
            out = []
            for p in self._bsf.filter(copy):
                pts = p.pts if p.pts is not None else p.dts
                out.append(
                    AccessUnit(
                        bytes(p),
                        self._pts90(pts, pts90),
                        bool(p.is_keyframe),
                        self.codec,
                        received_ms=received_ms,
                    )
                )
            return out
        data = bytes(packet)
        if key and self._params and self.codec in ("h264", "hevc"):
            wanted = _H264_PARAM_NALS if self.codec == "h264" else _HEVC_PARAM_NALS
            if not wanted & set(_nal_types(data, self.codec)):
                data = self._params + data
        return [AccessUnit(data, pts90, key, self.codec, received_ms=received_ms)]


class StreamSource:
    """Pulls one stream in a worker thread and hands sampled frames and encoded packets to consumers.

    Consumers can be added and removed at any time from any thread; frame and packet consumers share one
    pull. Callbacks run on the worker thread and must not block. ``start``/``stop`` may be repeated.
    """

    def __init__(
        self,
        device_id: str,
        spec: SourceSpec,
        *,
        on_status: StatusCallback | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.device_id = device_id
        self._spec = spec
        self._on_status = on_status
        self._rand = rand
        self.stats = StreamStats()
        self._lock = threading.Lock()
        self._frame_consumers: tuple[_FrameConsumer, ...] = ()
        self._packet_consumers: tuple[_PacketConsumer, ...] = ()
        self._run: _Run | None = None
        self._last_thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._gop = GopEstimator()
        self._seq = 0

    # -- configuration -------------------------------------------------------------------------------

    @property
    def spec(self) -> SourceSpec:
        return self._spec

    def update_spec(self, spec: SourceSpec) -> None:
        """Switch to a new URL or settings; a running worker reconnects at once, consumers stay attached."""
        with self._lock:
            self._spec = spec
            self._gop.reset()
            run = self._run
        if run is not None:
            self._abandon(run, reason=None)

    def add_frame_consumer(
        self,
        consumer_id: str,
        sampler: Sampler,
        callback: FrameCallback,
        *,
        shapes_decode: bool = True,
        label: str | None = None,
    ) -> None:
        """Deliver frames picked by ``sampler``; ``shapes_decode=False`` (snapshots) never forces full decode.

        ``label`` goes into ``Frame.instance_ids`` when this consumer takes a frame.
        """
        with self._lock:
            others = tuple(c for c in self._frame_consumers if c.consumer_id != consumer_id)
            self._frame_consumers = (
                *others,
                _FrameConsumer(consumer_id, sampler, callback, shapes_decode, label),
            )

    def add_packet_consumer(
        self, consumer_id: str, callback: PacketCallback, *, replay_gop: bool = False
    ) -> None:
        """Deliver every video access unit in Annex-B form (H.264/H.265) or as demuxed (other codecs).

        ``replay_gop``: start with the units of the current GOP, from its keyframe, that arrived before this
        consumer did (each with its own ``received_ms``), so a recorder joining a running pull has the
        footage since the last keyframe instead of waiting for the next one. Live players leave it off: a
        burst of old frames would play late.
        """
        with self._lock:
            others = tuple(c for c in self._packet_consumers if c.consumer_id != consumer_id)
            self._packet_consumers = (*others, _PacketConsumer(consumer_id, callback, replay_gop))

    def remove_consumer(self, consumer_id: str) -> bool:
        with self._lock:
            before = len(self._frame_consumers) + len(self._packet_consumers)
            self._frame_consumers = tuple(c for c in self._frame_consumers if c.consumer_id != consumer_id)
            self._packet_consumers = tuple(c for c in self._packet_consumers if c.consumer_id != consumer_id)
            return before != len(self._frame_consumers) + len(self._packet_consumers)

    @property
    def consumer_count(self) -> int:
        return len(self._frame_consumers) + len(self._packet_consumers)

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        run = self._run
        return run is not None and not run.stop.is_set()

    def start(self) -> None:
        """Open the stream in a new worker thread (no-op if already running)."""
        with self._lock:
            if self._run is not None and not self._run.stop.is_set():
                return
            self._spawn_locked()
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(
                    target=self._watch, name=f"watchdog-{self.device_id}", daemon=True
                )
                self._watchdog.start()

    def stop(self, timeout: float | None = 2.0) -> bool:
        """Ask the worker to stop and wait up to ``timeout`` s; True if it has exited."""
        with self._lock:
            run = self._run
            self._run = None
        if run is None:
            return True
        run.stop.set()
        run.wake.set()
        self._set_status("stopped", None, force=True)
        thread = self._last_thread = run.thread
        if thread is None or timeout == 0:
            return thread is None or not thread.is_alive()
        thread.join(timeout)
        return not thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker (the live one, else the last stopped one) to exit; True if it has."""
        run = self._run
        thread = run.thread if run is not None else self._last_thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _spawn_locked(self) -> _Run:
        run = _Run()
        run.thread = threading.Thread(
            target=self._work, args=(run,), name=f"stream-{self.device_id}", daemon=True
        )
        self._run = run
        run.thread.start()
        return run

    def _abandon(self, run: _Run, reason: str | None) -> None:
        """Leave ``run`` to die on its own and start a fresh worker (spec change, or a stuck worker)."""
        with self._lock:
            if self._run is not run:
                return
            run.stop.set()
            run.wake.set()
            if reason is not None:
                self.stats.stalls += 1
                self.stats.reconnects += 1
                self.stats.last_error = reason
            self._spawn_locked()

    def _watch(self) -> None:
        """Watchdog: a worker with no progress for open+stall timeouts plus grace is stuck; replace it."""
        while True:
            run = self._run
            if run is None:
                return
            spec = self._spec
            limit = spec.open_timeout_s + spec.stall_timeout_s + 5.0
            if time.monotonic() - run.progress > limit:
                log.warning("stream %s: worker stuck for %.0f s, starting a new one", self.device_id, limit)
                self._abandon(run, reason=f"worker stuck for more than {limit:.0f} s")
            time.sleep(min(1.0, spec.stall_timeout_s / 2))

    def _set_status(
        self, status: Status, error: str | None, *, run: _Run | None = None, force: bool = False
    ) -> None:
        if not force and run is not None and self._run is not run:
            return  # an abandoned worker must not overwrite the live one's state
        changed = self.stats.status != status
        self.stats.status = status
        if error is not None:
            self.stats.last_error = error
        if changed and self._on_status is not None:
            try:
                self._on_status(status, error)
            except Exception:
                log.exception("stream %s: status callback failed", self.device_id)

    # -- worker ---------------------------------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        attempt = 0
        while not run.stop.is_set():
            spec = self._spec
            run.progress = time.monotonic()
            self._set_status("connecting", None, run=run)
            got_packets = False
            error: str | None = None
            try:
                got_packets = self._session(run, spec)
            except StreamStall as exc:
                error = str(exc)
                got_packets = True
                if self._run is run:
                    self.stats.stalls += 1
            except SourceRefused as exc:  # a bound broken, or no answer: the message says which
                error = str(exc)
            except av.error.ExitError:
                error = f"no data for {spec.stall_timeout_s:g} s (read timed out)"
                if self._run is run:
                    self.stats.stalls += 1
            except (av.error.FFmpegError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug or odd stream must not kill the camera for good
                log.exception("stream %s: unexpected error", self.device_id)
                error = f"{type(exc).__name__}: {exc}"
            if run.stop.is_set():
                break
            if got_packets:
                attempt = 0
            if error is None:
                if spec.kind == "file":
                    if spec.loops and got_packets:
                        continue
                    self._set_status("stopped", None, run=run)
                    with self._lock:
                        if self._run is run:
                            self._run = None
                            self._last_thread = run.thread
                    run.stop.set()
                    return
                error = "stream ended"
            delay = backoff_delay(attempt, spec.backoff_base_s, spec.backoff_cap_s, self._rand)
            attempt += 1
            if self._run is run:
                self.stats.reconnects += 1
            log.info("stream %s: %s; reconnecting in %.2f s", self.device_id, error, delay)
            self._set_status("backoff", error, run=run)
            run.progress = time.monotonic() + delay
            run.wake.wait(delay)
        self._set_status("stopped", None, run=run)

    def _session(self, run: _Run, spec: SourceSpec) -> bool:
        """One connection: open, demux, decode, deliver. Returns at end of stream; raises on failure."""
        got_packets = False
        container = self._open(run, spec)
        try:
            if not container.streams.video:
                raise av.error.InvalidDataError(0, "stream has no video track")
            video = container.streams.video[0]
            ctx = video.codec_context
            ctx.thread_type = "SLICE"  # frame threads would hold keyframes back for N packets
            time_base = video.time_base or Fraction(1, PTS_CLOCK_HZ)
            if self._run is run:
                self.stats.connects += 1
                self.stats.codec = ctx.name
                self.stats.width = ctx.width or None
                self.stats.height = ctx.height or None
            annexb: _AnnexBWriter | None = None
            stamps = _TimestampFill(time_base)
            need_key = True
            keyframes_only = False
            pending: list[tuple[av.Packet[Any], float | None]] = []
            gop_cache: list[tuple[av.Packet[Any], int]] = []  # this GOP's packets, from its keyframe
            gop_complete = False  # gop_cache starts at a keyframe and has not overflowed
            gop_bytes = 0
            pace_anchor: tuple[float, float] | None = None
            last_t: float | None = None
            last_video = time.monotonic()
            for packet in container.demux():
                if run.stop.is_set():
                    return got_packets
                now = time.monotonic()
                run.progress = now
                if packet.stream_index != video.index:
                    if now - last_video > spec.stall_timeout_s:
                        raise StreamStall(f"no video packet for {spec.stall_timeout_s:g} s")
                    continue
                if packet.size == 0:  # end-of-stream flush marker
                    if keyframes_only or not need_key:
                        self._decode(ctx, None, last_t, run)
                    continue
                last_video = now
                if not got_packets:
                    got_packets = True
                    self._set_status("streaming", None, run=run)
                stats = self.stats
                stats.packets += 1
                stats.bytes += packet.size
                stats.last_packet_monotonic = now
                ts = stamps.fill(packet)
                t = float(ts * time_base) if ts is not None else None
                key = bool(packet.is_keyframe)
                received_ms = int(time.time() * 1000)
                if key:
                    gop_cache.clear()
                    gop_complete, gop_bytes = True, 0
                if gop_complete:
                    gop_bytes += packet.size
                    if len(gop_cache) < MAX_GOP_CACHE_PACKETS and gop_bytes <= MAX_GOP_CACHE_BYTES:
                        gop_cache.append((packet, received_ms))
                    else:
                        gop_cache.clear()
                        gop_complete = False
                if key:
                    stats.keyframes += 1
                    if t is not None:
                        self._gop.observe_keyframe(t)
                        stats.gop_s = self._gop.gop_s
                if spec.paced and t is not None:
                    pace_anchor = self._pace(run, pace_anchor, last_t, t)
                if t is not None:
                    last_t = t

                frame_consumers = self._frame_consumers
                packet_consumers = self._packet_consumers
                shaping = [c.sampler.interval_s for c in frame_consumers if c.shapes_decode]
                min_interval = min(shaping) if shaping else (math.inf if frame_consumers else None)
                decision = plan(min_interval, self._gop.gop_s, spec.gop_s)
                if decision.decode:
                    if decision.keyframes_only != keyframes_only:
                        keyframes_only = decision.keyframes_only
                        ctx.skip_frame = "NONKEY" if keyframes_only else "DEFAULT"
                        need_key = True  # packets were or will be skipped: restart decoding at a keyframe
                        pending.clear()
                    stats.keyframes_only = keyframes_only
                    if key:
                        need_key = False
                        pending.clear()  # the rest of the last GOP was never wanted: never decoded
                    if need_key:
                        pass
                    elif keyframes_only:
                        if key:
                            self._decode(ctx, packet, t, run)
                    else:
                        # Decode on demand: hold this GOP's packets until one of them is due for some
                        # consumer, then decode everything up to it (the decoder sees every packet since
                        # the keyframe). Frames after the last due one in a GOP are never decoded.
                        pending.append((packet, t))
                        wanted = t is None or any(c.sampler.would_take(t) for c in frame_consumers)
                        if wanted or len(pending) >= MAX_PENDING_PACKETS:
                            for held, held_t in pending:
                                self._decode(ctx, held, held_t, run)
                            pending.clear()
                else:
                    need_key = True
                    pending.clear()
                if packet_consumers:
                    if annexb is None:
                        annexb = _AnnexBWriter(video)
                    units = annexb.convert(packet, received_ms)
                    for pc in packet_consumers:
                        if pc.replay_gop:
                            pc.replay_gop = False
                            cached = gop_cache[:-1] if gop_complete else []
                            self._deliver(pc, [u for p, ms in cached for u in annexb.convert(p, ms)] + units)
                        else:
                            self._deliver(pc, units)
            return got_packets
        finally:
            container.close()

    def _deliver(self, consumer: _PacketConsumer, units: list[AccessUnit]) -> None:
        for unit in units:
            try:
                consumer.callback(unit)
            except Exception:
                self.stats.consumer_errors += 1
                log.exception("stream %s: packet consumer %s failed", self.device_id, consumer.consumer_id)

    def _open(self, run: _Run, spec: SourceSpec) -> av.container.InputContainer:
        """Open within ``open_timeout_s`` in all, under the bounds of :mod:`pipelines.source_bounds`.

        HLS (and an ``http://`` URL that turns out to be a playlist) is read through :class:`BoundedHttp`;
        other HTTP streams go to ffmpeg with its HLS demuxer excluded. PyAV times ``avformat_open_input``
        and ``avformat_find_stream_info`` separately, so each gets half of what is left of the budget.
        """
        cap_ffmpeg_allocations()
        deadline = time.monotonic() + spec.open_timeout_s
        if spec.kind == "gb28181":
            try:
                feed = open_feed(spec.url, spec.open_timeout_s)
            except (RuntimeError, TimeoutError) as exc:
                raise SourceRefused(str(exc)) from None
            return cast(av.container.InputContainer, _FeedContainer(feed, run.stop, spec, deadline))
        target = spec.open_target()
        options = spec.av_options()
        http: BoundedHttp | None = None
        fmt: str | None = None
        if urlsplit(target).scheme.lower() in HTTP_SCHEMES:
            http = BoundedHttp(
                deadline=deadline, io_timeout_s=spec.stall_timeout_s, stop=run.stop, ffmpeg_options=options
            )
            playlist = spec.kind == "hls"
            if spec.kind == "http":
                resp, _, playlist = http.peek(target, time.monotonic() + spec.stall_timeout_s)
                resp.close()
            if not playlist:
                http = None
                options.setdefault("format_whitelist", _non_hls_demuxers())
            else:  # ffmpeg's keep-alive reuses its own HTTP context, which a Python reader is not
                options.update(http_persistent="0", http_multiple="0")
                fmt = "hls"  # ffmpeg detects HLS only by name or MIME type, which the reader does not pass
        budget = max(0.05, (deadline - time.monotonic()) / 2)
        try:
            container = av.open(
                target, format=fmt, options=options, timeout=(budget, spec.stall_timeout_s), io_open=http
            )
        except SourceRefused:
            raise
        except (av.error.FFmpegError, OSError) as exc:
            if run.stop.is_set():
                raise
            raise SourceRefused(self._explain(run, spec, exc, deadline)) from exc
        if http is not None:
            http.opened()
        return container

    def _explain(self, run: _Run, spec: SourceSpec, exc: Exception, deadline: float) -> str:
        """Words for a failed open; an opaque RTSP failure is diagnosed with one bounded DESCRIBE."""
        text = f"{type(exc).__name__}: {exc}"
        timed_out = isinstance(exc, av.error.ExitError | TimeoutError)
        if not (timed_out or isinstance(exc, _OPAQUE_OPEN_ERRORS)):
            return text
        if spec.kind == "rtsp" and urlsplit(spec.url).scheme.lower() == "rtsp":
            found = rtsp_diagnose(spec.url.strip(), deadline, spec.open_timeout_s, run.stop.is_set)
            if found is not None:
                return found
        if timed_out:
            return no_answer(spec.open_timeout_s, "the stream did not open")
        return text

    def _pace(
        self, run: _Run, anchor: tuple[float, float] | None, last_t: float | None, t: float
    ) -> tuple[float, float]:
        """Hold a file back to the stream clock; re-anchor on splices and when far behind."""
        now = time.monotonic()
        if anchor is None or last_t is None or t < last_t - 1e-6 or t - last_t > 5.0:
            return (now, t)
        wall0, t0 = anchor
        wait = wall0 + (t - t0) - now
        if wait < -1.0:
            return (now, t)
        while wait > 0 and not run.stop.is_set():
            run.stop.wait(min(wait, 0.5))
            run.progress = time.monotonic()
            wait = wall0 + (t - t0) - time.monotonic()
        return anchor

    def _decode(self, ctx: Any, packet: av.Packet[Any] | None, packet_t: float | None, run: _Run) -> None:
        try:
            frames = ctx.decode(packet)
        except av.error.FFmpegError as exc:
            self.stats.decode_errors += 1
            log.debug("stream %s: decode error %s", self.device_id, exc)
            return
        for frame in frames:
            self.stats.frames_decoded += 1
            self._offer(frame, packet_t, run)

    def _offer(self, frame: av.VideoFrame, packet_t: float | None, run: _Run) -> None:
        if self._run is not run:
            return
        t = frame.time
        pts = float(t) if t is not None else (packet_t if packet_t is not None else 0.0)
        takers = [c for c in self._frame_consumers if c.sampler.due(pts)]
        if not takers:
            return
        image = cast(
            "npt.NDArray[np.uint8]", frame.to_ndarray(format="bgr24")
        )  # convert only frames someone takes
        self._seq += 1
        self.stats.frames_sampled += 1
        out = Frame(
            device_id=self.device_id,
            image=image,
            pts=pts,
            captured_at=datetime.now(UTC),
            keyframe=bool(frame.key_frame),
            seq=self._seq,
            instance_ids=tuple(c.label for c in takers if c.label is not None),
        )
        for consumer in takers:
            try:
                consumer.callback(out)
            except Exception:
                self.stats.consumer_errors += 1
                log.exception("stream %s: frame consumer %s failed", self.device_id, consumer.consumer_id)
