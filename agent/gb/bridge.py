"""The agent's GB/T 28181 side: the sans-I/O device stack (``gb28181.aio.DeviceService``) plugged into the supervisor.

The box registers upstream as an NVR/ABOX with one catalog channel per pulled camera. Live INVITEs are served
from the stream manager's packet consumers (H.264/H.265 access units remuxed to PS/RTP, no transcoding): a
channel's pull attaches a consumer when the service starts reading it and detaches when the service closes it,
so an on-demand camera is opened for the session and closes after its idle timeout. When the camera source
fails, is removed, or the pipelines restart (TeleBoot), the pull ends and the service hangs up with BYE.
Targets from the detection pipeline can be sent as video alarms. Registration state shows in logs, ``/metrics``
and ``/healthz``.

Long because: it is the one adapter between the sans-I/O device stack and the box (catalog, live pulls, sessions, alarms, metrics); each part is small and they share the session bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent import __version__
from agent.box.ports import CameraPort, PipelineControl, TargetBus
from agent.box.registry import Device, DeviceStatus, Registry
from agent.config import Gb28181Config
from agent.ingest.streams import PACKETS, StreamManager, UnknownDevice
from agent.ops.logs import kv
from agent.ops.metrics import Sample
from gb28181.aio import DeviceService, KeyframeQueue
from gb28181.config import Channel, DeviceConfig
from gb28181.device import REFUSAL_REASONS
from gb28181.events import (
    ByeReceived,
    Event,
    InviteReceived,
    KeepaliveMissed,
    MediaSessionStarted,
    Registered,
    RegistrationFailed,
    RegistrationLost,
    SessionEnded,
    TeleBoot,
    Unregistered,
)
from pipelines.annexb import AccessUnit, codec_family

if TYPE_CHECKING:
    from agent.analytics.targets import TargetRecord

log = logging.getLogger("vcs_edge.gb28181")

#: access units buffered per pull between the stream thread's hand-off and the GB service (~4 s at 25 fps)
MEDIA_QUEUE = 100
#: AlarmType 2 (motion target detection) of the video alarm method (5): a detected face/body/vehicle
ALARM_TYPE_TARGET = 2
ALARM_PRIORITY = 4
KEEP_PULLS = 64


@dataclass(slots=True)
class PullStats:
    """One read of a camera by the GB service (shared by every session on that channel at that time)."""

    pull_id: int
    channel_id: str
    camera_id: str
    consumer_id: str
    started_monotonic: float = field(default_factory=time.monotonic)
    #: access units the stream manager handed to this pull's packet consumer
    received: int = 0
    #: access units given to the GB service (what it packetises): the count a receiver can decode
    delivered: int = 0
    #: dropped before the first keyframe (a PS stream must start at one)
    skipped_before_keyframe: int = 0
    #: dropped because the service fell behind (the pull restarts at the next keyframe)
    dropped: int = 0
    ended: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pull": self.pull_id,
            "channel": self.channel_id,
            "camera": self.camera_id,
            "received": self.received,
            "delivered": self.delivered,
            "skipped_before_keyframe": self.skipped_before_keyframe,
            "dropped": self.dropped,
            "ended": self.ended,
        }


@dataclass(slots=True)
class SessionInfo:
    """One live session (an ACKed INVITE) and the pull that feeds it."""

    call_id: str
    channel_id: str
    camera_id: str | None
    transport: str
    remote: str
    pull: PullStats | None
    started_monotonic: float = field(default_factory=time.monotonic)
    ended: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "channel": self.channel_id,
            "camera": self.camera_id,
            "transport": self.transport,
            "remote": self.remote,
            "frames_delivered": self.pull.delivered if self.pull else 0,
            "age_s": round(time.monotonic() - self.started_monotonic, 1),
        }


def device_config(cfg: Gb28181Config) -> DeviceConfig:
    """The device stack's configuration from the site file's ``gb28181`` section."""
    return DeviceConfig(
        server_id=cfg.server_id,
        server_host=cfg.server_host,
        server_port=cfg.server_port,
        realm=cfg.realm or "",
        transport=cfg.transport,
        device_id=cfg.device_id,
        password=cfg.password,
        name=cfg.name,
        manufacturer="vcs-edge",
        model="ABOX",
        firmware=__version__,
        user_agent=f"vcs-edge/{__version__}",
        expires_s=cfg.expires_s,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        heartbeat_count=cfg.heartbeat_count,
        register_backoff_s=cfg.register_backoff_s,
        local_ip=cfg.local_ip,
        local_sip_port=cfg.local_sip_port,
        rtp_port_range=(cfg.rtp_port_min, cfg.rtp_port_max),
        max_sessions_per_channel=cfg.max_sessions_per_channel,
        max_sessions=cfg.max_sessions,
        media_idle_timeout_s=cfg.media_idle_timeout_s,
        alarm_min_interval_s=cfg.alarms.min_interval_s,
    )


class GbBridge:
    """The box's ``gb28181`` service (see ``agent.box.services.Service``)."""

    name = "gb28181"

    #: the most a stop waits for the platform to answer the unregister (a silent platform must not eat the
    #: box's whole stop budget)
    UNREGISTER_WAIT_S = 1.0

    def __init__(
        self,
        cfg: Gb28181Config,
        registry: Registry,
        cameras: CameraPort,
        pipelines: PipelineControl,
        targets: TargetBus,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.cameras = cameras
        self.pipelines = pipelines
        self.targets = targets
        self._unsubscribe: Callable[[], None] | None = None
        self.device_config = device_config(cfg)
        self.service: DeviceService | None = None
        self.state = "stopped"
        self.last_error: str | None = None
        self.registered_since: float | None = None
        self.teleboots = 0
        self.media_units_dropped = 0
        self.pulls: deque[PullStats] = deque(maxlen=KEEP_PULLS)
        self.active_pulls: dict[int, PullStats] = {}
        self.sessions: dict[str, SessionInfo] = {}
        self._pull_ids = itertools.count(1)
        self._restart: asyncio.Task[None] | None = None
        self._starter: asyncio.Task[None] | None = None

    # --- Service ---------------------------------------------------------------------------------------

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    def _on_targets(self, records: list[TargetRecord]) -> None:
        for record in records:
            self.on_target(record)

    async def start(self) -> None:
        self._unsubscribe = self.targets.subscribe(self._on_targets)
        self.service = DeviceService(self.device_config, self.channels, self.media, on_event=self._on_event)
        self.state = "registering"
        try:
            await self.service.start()
        except OSError as exc:
            # e.g. the SIP port is taken: keep the agent running, say why, try again after the back-off
            self._start_failed(exc)
            self._starter = asyncio.get_running_loop().create_task(self._retry_start())
            return
        log.info("gb28181 started", extra=kv(**self._where()))

    async def _retry_start(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.register_backoff_s)
            assert self.service is not None
            try:
                await self.service.start()
            except OSError as exc:
                self._start_failed(exc)
                continue
            self.state = "registering"
            self.last_error = None
            log.info("gb28181 started", extra=kv(**self._where()))
            return

    def _start_failed(self, exc: OSError) -> None:
        self.state = "error"
        self.last_error = f"cannot open SIP {self.cfg.transport} port {self.cfg.local_sip_port}: {exc}"
        log.error(
            "gb28181 cannot start; retrying",
            extra=kv(error=self.last_error, retry_in_s=self.cfg.register_backoff_s, **self._where()),
        )

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in (self._starter, self._restart):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.service is not None:
            await self.service.stop(timeout=self.UNREGISTER_WAIT_S)
        self.state = "stopped"
        self.registered_since = None

    def samples(self) -> Iterable[Sample]:
        svc = self.service
        if svc is None:
            return
        m = svc.metrics
        p = "vcs_edge_gb28181_"

        def counter(name: str, help_: str, value: float) -> Sample:
            return Sample(p + name, "counter", help_, {}, float(value))

        def gauge(name: str, help_: str, value: float) -> Sample:
            return Sample(p + name, "gauge", help_, {}, float(value))

        yield gauge(
            "registered", "1 while registered to the GB/T 28181 platform", 1.0 if m.registered else 0.0
        )
        yield counter(
            "registrations_total", "Successful registrations (first and after a loss)", m.registrations
        )
        yield counter("keepalives_total", "Keepalive MESSAGEs sent", m.keepalives_sent)
        yield counter("malformed_dropped_total", "Malformed SIP/MANSCDP input dropped", m.malformed_dropped)
        for reason in REFUSAL_REASONS:
            yield Sample(
                p + "requests_refused_total",
                "counter",
                "Requests refused with 403 (not the registered platform) or 486 (session limits), by reason",
                {"reason": reason},
                float(m.requests_refused.get(reason, 0)),
            )
        yield counter(
            "sessions_receiver_gone_total",
            "Sessions ended because their receiver was gone (ICMP error, TCP closed, idle timeout)",
            m.sessions_receiver_gone,
        )
        yield gauge("sessions_active", "Live media sessions being sent", m.sessions_active)
        yield counter("sessions_total", "Live media sessions started", m.sessions_total)
        yield gauge("pulls_active", "Cameras read for live media", m.pulls_active)
        yield counter("rtp_packets_total", "RTP packets sent", m.rtp_packets_sent)
        yield counter("media_frames_total", "Video frames sent as PS", m.media_frames_sent)
        yield counter("media_failures_total", "Media sessions or sources that failed", m.media_failures)
        yield counter(
            "media_units_dropped_total",
            "Access units dropped because a pull fell behind",
            self.media_units_dropped,
        )
        yield counter("alarms_total", "Alarm notifications sent", m.alarms_sent)
        yield counter(
            "alarms_suppressed_total", "Alarms held back by the per-channel rate limit", m.alarms_suppressed
        )
        yield counter(
            "teleboots_total", "DeviceControl TeleBoot commands (pipeline restarts)", self.teleboots
        )
        if m.time_offset_s is not None:
            yield gauge(
                "time_offset_seconds", "Platform time (200 OK Date) minus local time", m.time_offset_s
            )

    def health(self) -> dict[str, Any]:
        m = self.service.metrics if self.service is not None else None
        return {
            "state": self.state,
            "registered": bool(m and m.registered),
            "server": f"{self.cfg.server_host}:{self.cfg.server_port}",
            "transport": self.cfg.transport,
            "device_id": self.cfg.device_id,
            "registrations": m.registrations if m else 0,
            "last_error": self.last_error,
            "registered_for_s": (
                round(time.monotonic() - self.registered_since, 1)
                if self.registered_since is not None
                else None
            ),
            "time_offset_s": round(m.time_offset_s, 3) if m and m.time_offset_s is not None else None,
            "channels": len(self.registry.pulled()),
            "sessions": [s.as_dict() for s in self.sessions.values() if s.ended is None],
        }

    def _where(self) -> dict[str, Any]:
        return {
            "server": f"{self.cfg.server_host}:{self.cfg.server_port}",
            "transport": self.cfg.transport,
            "device": self.cfg.device_id,
        }

    # --- catalog ---------------------------------------------------------------------------------------

    def channel_id(self, camera_id: str) -> str:
        return self.cfg.channels.get(camera_id, camera_id)

    def camera_for(self, channel_id: str) -> Device | None:
        for dev in self.registry.pulled():
            if self.channel_id(dev.device_id) == channel_id:
                return dev
        return None

    def channels(self) -> list[Channel]:
        """One catalog channel per pulled camera, called by the device stack whenever it needs them."""
        out = []
        for dev in self.registry.pulled():
            out.append(
                Channel(
                    channel_id=self.channel_id(dev.device_id),
                    name=dev.name,
                    manufacturer=dev.vendor or "vcs-edge",
                    model=dev.model or "Camera",
                    civil_code=dev.city_code or self.cfg.device_id[:6],
                    address=dev.address,
                    parent_id=self.cfg.device_id,
                    status_on=self._camera_online(dev),
                    longitude=dev.longitude,
                    latitude=dev.latitude,
                )
            )
        return out

    def _camera_online(self, dev: Device) -> bool:
        """ON unless the device is marked offline or its stream is failing (an idle on-demand camera, never
        opened yet and so still pending, is ON)."""
        if dev.status is DeviceStatus.OFFLINE:
            return False
        return not self.cameras.failing(dev.device_id)

    # --- live media ------------------------------------------------------------------------------------

    def media(self, channel_id: str) -> AsyncIterator[AccessUnit]:
        """The device stack's media provider: access units of the channel's camera, in real time."""
        return self._pull(channel_id)

    async def _pull(self, channel_id: str) -> AsyncIterator[AccessUnit]:
        dev = self.camera_for(channel_id)
        if dev is None or dev.stream is None:
            log.warning("gb28181 live: no camera for channel", extra=kv(channel=channel_id))
            return
        camera = dev.device_id
        manager: StreamManager = self.cameras.manager
        pid = next(self._pull_ids)
        stats = PullStats(pid, channel_id, camera, f"gb28181-{pid}")
        self.pulls.append(stats)
        self.active_pulls[pid] = stats
        for s in self.sessions.values():
            if s.pull is None and s.ended is None and s.channel_id == channel_id:
                s.pull = stats
        feed = KeyframeQueue(MEDIA_QUEUE)
        unsupported: list[str] = []

        def on_unit(au: AccessUnit) -> None:
            stats.received += 1
            if codec_family(au.codec) is None:
                if not unsupported:
                    unsupported.append(au.codec)
                    feed.offer(None)  # wake the reader: it ends the pull
                return
            dropped = feed.dropped
            feed.offer(au)  # the sources' unit is the one the PS muxer takes
            stats.skipped_before_keyframe = feed.skipped
            stats.dropped = feed.dropped
            self.media_units_dropped += feed.dropped - dropped

        def on_status(device_id: str, status: str, error: str | None) -> None:
            if device_id == camera:
                feed.offer(None)  # pushed, never polled: the reader looks at the stream's state now

        attached_at = time.monotonic()
        open_timeout = dev.stream.open_timeout_s
        seen_streaming = False
        reason = "closed by the service"
        self.cameras.listeners.append(on_status)
        try:
            try:
                manager.attach(camera, stats.consumer_id, PACKETS, on_unit)
            except (UnknownDevice, RuntimeError) as exc:
                reason = f"camera stream unavailable: {exc}"
                return
            log.info("gb28181 live: camera opened", extra=kv(channel=channel_id, camera=camera, pull=pid))
            while True:
                try:
                    # a camera that never delivers nor fails is given up after its open timeout
                    async with asyncio.timeout(open_timeout if not stats.received else None):
                        au = await feed.queue.get()
                except TimeoutError:
                    au = None
                if au is None:
                    if unsupported:
                        reason = f"codec {unsupported[0]} cannot be sent as PS (H.264/H.265 only)"
                        return
                    if camera not in manager.devices() or self.cameras.manager is not manager:
                        reason = "camera stream removed or pipelines restarted"
                        return
                    status = manager.stats(camera).status
                    seen_streaming = seen_streaming or status == "streaming"
                    if not manager.is_open(camera):
                        reason = "camera stream ended"
                        return
                    if status == "backoff" and (
                        seen_streaming or stats.received or time.monotonic() - attached_at > open_timeout
                    ):
                        reason = f"camera source failed: {manager.stats(camera).last_error or 'unknown'}"
                        return
                    continue
                stats.delivered += 1
                yield au
        finally:
            if on_status in self.cameras.listeners:
                self.cameras.listeners.remove(on_status)
            stats.ended = reason
            self.active_pulls.pop(pid, None)
            if camera in manager.devices():
                manager.detach(camera, stats.consumer_id)
            for s in self.sessions.values():
                if s.pull is stats and s.ended is None:
                    s.ended = reason
            log.info(
                "gb28181 live: camera released",
                extra=kv(**stats.as_dict()),
            )

    # --- events ----------------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Registered):
            first = self.state != "registered"
            self.state = "registered"
            self.last_error = None
            if first:
                self.registered_since = time.monotonic()
                log.info(
                    "gb28181 registered",
                    extra=kv(expires_s=event.expires, time_offset_s=event.time_offset_s, **self._where()),
                )
        elif isinstance(event, RegistrationFailed):
            self.state = "failed"
            self.last_error = f"{event.status or 'no answer'} {event.reason}".strip()
            self.registered_since = None
            log.warning(
                "gb28181 registration failed",
                extra=kv(
                    status=event.status, reason=event.reason, retry_in_s=event.retry_in_s, **self._where()
                ),
            )
        elif isinstance(event, RegistrationLost):
            self.state = "lost"
            self.last_error = event.reason
            self.registered_since = None
            log.warning("gb28181 registration lost", extra=kv(reason=event.reason, **self._where()))
        elif isinstance(event, Unregistered):
            self.state = "unregistered"
            self.registered_since = None
            log.info("gb28181 unregistered", extra=kv(status=event.status, **self._where()))
        elif isinstance(event, KeepaliveMissed):
            log.warning("gb28181 keepalive unanswered", extra=kv(misses=event.misses, status=event.status))
        elif isinstance(event, TeleBoot):
            self._teleboot()
        elif isinstance(event, InviteReceived):
            dev = self.camera_for(event.channel_id)
            log.info(
                "gb28181 live: INVITE",
                extra=kv(
                    channel=event.channel_id,
                    camera=dev.device_id if dev else None,
                    transport=event.offer.transport,
                    setup=event.offer.setup,
                    to=f"{event.offer.ip}:{event.offer.port}",
                    ssrc=event.offer.ssrc_text,
                ),
            )
        elif isinstance(event, MediaSessionStarted):
            dev = self.camera_for(event.channel_id)
            camera = dev.device_id if dev else None
            pull = next(
                (p for p in reversed(self.active_pulls.values()) if p.channel_id == event.channel_id), None
            )
            self.sessions[event.call_id] = SessionInfo(
                event.call_id,
                event.channel_id,
                camera,
                event.offer.transport if event.offer.transport == "udp" else f"tcp-{event.offer.setup}",
                f"{event.offer.ip}:{event.offer.port}",
                pull,
            )
            self._forget_old_sessions()
        elif isinstance(event, ByeReceived | SessionEnded):
            info = self.sessions.get(event.call_id)
            why = "BYE from the platform" if isinstance(event, ByeReceived) else event.reason
            if info is not None and info.ended is None:
                info.ended = why
            log.info("gb28181 live: session ended", extra=kv(channel=event.channel_id, reason=why))

    def _forget_old_sessions(self) -> None:
        ended = [cid for cid, s in self.sessions.items() if s.ended is not None]
        for cid in ended[: max(0, len(ended) - KEEP_PULLS)]:
            del self.sessions[cid]

    def _teleboot(self) -> None:
        self.teleboots += 1
        if self._restart is not None and not self._restart.done():
            log.warning("gb28181 TeleBoot: a pipeline restart is already running")
            return
        log.warning("gb28181 TeleBoot: restarting pipelines", extra=kv(**self._where()))
        self._restart = asyncio.get_running_loop().create_task(self._run_restart())

    async def _run_restart(self) -> None:
        try:
            await self.pipelines.restart_pipelines()
        except Exception:
            log.exception("gb28181 TeleBoot: pipeline restart failed")

    # --- alarms ----------------------------------------------------------------------------------------

    def on_target(self, record: TargetRecord) -> bool:
        """Send ``record`` as a video alarm of its camera's channel when the site asks for alarms.

        False when alarms are off, the camera is not a channel, the box is not registered, or the channel's
        rate limit (``alarms.min_interval_s``) held it back.
        """
        if not self.cfg.alarms.enabled or self.service is None:
            return False
        dev = self.registry.get(record.device_id)
        if dev is None or dev.stream is None:
            return False
        description = f"{record.target_type} score {record.score:.2f}"
        if record.instance_id:
            description += f" instance {record.instance_id}"
        return self.service.send_alarm(
            self.channel_id(dev.device_id),
            alarm_type=ALARM_TYPE_TARGET,
            priority=ALARM_PRIORITY,
            method=5,
            description=description,
            longitude=dev.longitude,
            latitude=dev.latitude,
        )
