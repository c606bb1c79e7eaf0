"""The ``gb28181_server`` service: this box as the GB/T 28181 access server of its site's cameras and NVRs.

Who may register: a device made with CreateDevice (InProtocol GBT28181) with the password CreateDevice answered
(kept in the overlay), or a device of the site file with the password of its ``gb28181_server.devices`` entry
or the section's. Anyone else gets 403.

What registration does to the registry: DeviceStatus follows it (ONLINE while registered and keepalives come,
OFFLINE after HeartBeatInterval × HeartBeatCount without one or when the registration ends). The device's
catalog decides its cameras: an IPC becomes pulled from its first channel, an NVR's channels become its
sub-devices (SubDeviceIdList), each pulled, made through the overlay like CreateDevice's channels so they
survive a restart. A pulled channel's stream URL is ``gb28181://<device>/<channel>``: the stream manager opens
it like any camera, the open INVITEs the channel (media transport per device, TCP fallback), the close BYEs.
StreamMode 0 therefore invites on demand and BYEs when idle; 1 keeps it open and re-invites after a failure.
Sampling, detection, live view, snapshots and the upstream bridge (cascade) read those cameras unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from aiohttp import web

from agent import config as cfgmod
from agent.box.overlay import DeviceExtra, Overlay, device_to_json, now_utc, stream_settings
from agent.box.ports import BoxControl
from agent.box.registry import Device, DeviceStatus, Registry
from agent.config import DeviceType
from agent.config.enums import StreamMode
from agent.config.gb28181_server import MediaMode
from agent.ops.metrics import Sample
from agent.ops.tasks import spawn
from gb28181.aio_server import AccessServerService, LiveSession
from gb28181.catalog_sync import Catalog
from gb28181.server import (
    CatalogReceived,
    DeviceOffline,
    DeviceOnline,
    RegisterRefused,
    ServerConfig,
    ServerEvent,
)
from pipelines.feeds import FeedUnavailable, PacketFeed, parse_gb_url, register_opener

log = logging.getLogger("vcs_edge.gb_server")
SCHEME = "gb28181"


def gb_url(device_id: str, channel_id: str) -> str:
    return f"{SCHEME}://{device_id}/{channel_id}"


class GbServerService:
    name = "gb28181_server"

    def __init__(
        self,
        cfg: cfgmod.GbServerConfig,
        site: cfgmod.SiteFile,
        registry: Registry,
        box: BoxControl,
        overlay: Overlay,
    ) -> None:
        self.cfg = cfg
        self.site = site
        self.registry = registry
        self.box = box
        self.overlay = overlay
        acc = site.api.gb_access if site.api is not None else None
        server_id = cfg.server_id or (acc.server_id if acc else None) or (site.site.gb_prefix + "2000000001")
        realm = cfg.realm or (acc.realm if acc else None) or server_id[:10]
        self.server_cfg = ServerConfig(
            server_id=server_id,
            realm=realm,
            local_ip=cfg.local_ip,
            local_port=cfg.sip_port,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            heartbeat_count=cfg.heartbeat_count,
            subscribe_catalog=cfg.subscribe_catalog,
        )
        self.service = AccessServerService(
            self.server_cfg,
            self.password_of,
            bind_ip=cfg.local_ip,
            sip_port=cfg.sip_port,
            rtp_ports=(cfg.rtp_port_min, cfg.rtp_port_max),
            on_event=self._on_event,
            answer_timeout_s=cfg.answer_timeout_s,
            tcp_timeout_s=cfg.tcp_timeout_s,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unregister: Callable[[], None] | None = None
        self._feeds: dict[int, tuple[PacketFeed, LiveSession | None]] = {}
        self.error = ""
        self.plays = 0
        self.play_failures = 0
        self.catalogs = 0

    # --- service ------------------------------------------------------------------------------------

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reset_statuses()
        try:
            await self.service.start()
        except OSError as exc:
            self.error = f"cannot bind SIP {self.cfg.local_ip}:{self.cfg.sip_port}: {exc}"
            log.error("gb28181 server: %s", self.error)
            return
        self._unregister = register_opener(SCHEME, self._open_feed)
        log.info("gb28181 server listening", extra={"address": f"{self.service.local_address}"})

    async def stop(self) -> None:
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        await self.service.stop()

    def samples(self) -> Iterable[Sample]:
        srv = self.service.server
        p = "vcs_edge_gb28181_server_"
        yield Sample(
            p + "devices_online",
            "gauge",
            "Downstream GB/T 28181 devices registered and heard within HeartBeatInterval x HeartBeatCount.",
            {},
            float(sum(1 for d in srv.devices.values() if d.online)),
        )
        yield Sample(
            p + "sessions",
            "gauge",
            "Live media sessions from downstream devices.",
            {},
            float(len(self.service.sessions)),
        )
        yield Sample(p + "plays_total", "counter", "INVITEs that brought media up.", {}, float(self.plays))
        yield Sample(
            p + "play_failures_total", "counter", "INVITEs that failed.", {}, float(self.play_failures)
        )
        yield Sample(
            p + "tcp_fallbacks_total",
            "counter",
            "TCP sessions retried in the other role.",
            {},
            float(self.service.fallbacks),
        )
        yield Sample(
            p + "malformed_total",
            "counter",
            "SIP messages dropped as malformed.",
            {},
            float(srv.malformed_dropped),
        )
        for reason, n in srv.refused.items():
            yield Sample(
                p + "refused_total",
                "counter",
                "Requests turned away, by reason.",
                {"reason": reason},
                float(n),
            )

    def health(self) -> dict[str, Any]:
        srv = self.service.server
        return {
            "address": list(self.service.local_address or ()),
            "error": self.error,
            "devices_online": sorted(d.device_id for d in srv.devices.values() if d.online),
            "sessions": len(self.service.sessions),
            "plays": self.plays,
            "play_failures": self.play_failures,
            "tcp_fallbacks": self.service.fallbacks,
            "refused": dict(srv.refused),
            "keepalives_before_register": srv.keepalives_before_register,
            "catalog_subscriptions": {
                d.device_id: d.subscription for d in srv.devices.values() if d.subscription
            },
        }

    def _reset_statuses(self) -> None:
        """Nothing is registered to a server that just started: a GB/T 28181 device restored ONLINE is OFFLINE
        until it registers again, a site-file one that never did is PENDING."""
        for dev in self.registry:
            extra = self.overlay.extras.get(dev.device_id)
            gb = extra is not None and extra.in_protocol == "GBT28181"
            if gb and dev.status is DeviceStatus.ONLINE:
                dev.status = DeviceStatus.OFFLINE
            elif dev.declared and dev.device_id in self.cfg.devices and dev.stream is None:
                dev.status = DeviceStatus.PENDING
                for cid in dev.sub_device_ids:
                    child = self.registry.get(cid)
                    if child is not None and child.stream is None:
                        child.status = DeviceStatus.PENDING

    # --- who may register ---------------------------------------------------------------------------

    def password_of(self, device_id: str) -> str | None:
        entry = self.cfg.devices.get(device_id)
        if entry is not None and entry.password:
            return entry.password
        extra = self.overlay.extras.get(device_id)
        if extra is not None and extra.in_protocol == "GBT28181" and extra.password:
            return extra.password
        dev = self.registry.get(device_id)
        if dev is not None and dev.declared and (entry is not None or self.cfg.password):
            return self.cfg.password
        return None

    def media_mode(self, device_id: str) -> MediaMode:
        entry = self.cfg.devices.get(device_id)
        return (entry.media if entry is not None and entry.media else None) or self.cfg.media

    # --- registry -----------------------------------------------------------------------------------

    def _on_event(self, event: ServerEvent) -> None:
        if isinstance(event, DeviceOnline):
            self._set_status(event.device_id, DeviceStatus.ONLINE)
        elif isinstance(event, DeviceOffline):
            log.info("gb28181 device offline", extra={"device": event.device_id, "reason": event.reason})
            self._set_status(event.device_id, DeviceStatus.OFFLINE)
        elif isinstance(event, RegisterRefused):
            log.warning(
                "gb28181 REGISTER refused",
                extra={"device": event.device_id, "address": f"{event.addr}", "reason": event.reason},
            )
        elif isinstance(event, CatalogReceived):
            self.catalogs += 1
            spawn(self._apply_catalog(event.catalog), name=f"gb-catalog-{event.device_id}")

    def _set_status(self, device_id: str, status: DeviceStatus) -> None:
        dev = self.registry.get(device_id)
        if dev is None:
            return
        dev.status = status
        for cid in dev.sub_device_ids:
            child = self.registry.get(cid)
            if child is not None:
                child.status = status

    def _save(self, devs: list[Device]) -> None:
        puts = [
            (
                "device",
                d.device_id,
                device_to_json(d, self.overlay.extras.setdefault(d.device_id, DeviceExtra())),
            )
            for d in devs
        ]
        self.overlay.state.write(puts=puts)
        self.overlay.remember_ids([d.device_id for d in devs])

    def _stream_for(self, device_id: str, channel_id: str, dev: Device | None) -> Any:
        mode_override = self.overlay.stream_modes.get(dev.device_id if dev else channel_id)
        mode = (
            StreamMode(mode_override)
            if mode_override is not None
            else (dev.stream.mode if dev is not None and dev.stream is not None else None)
        )
        return stream_settings(gb_url(device_id, channel_id), self.site.streams, mode)

    async def _apply_catalog(self, catalog: Catalog) -> None:
        did = catalog.device_id
        dev = self.registry.get(did)
        if dev is None or not catalog.channels:
            return
        remote = self.service.server.devices.get(did)
        online = remote is not None and remote.online
        changed: list[Device] = []
        now = now_utc()
        if dev.device_type is DeviceType.IPC and dev.parent_id is None:
            chan = next((c for c in catalog.channels if c.channel_id == did), catalog.channels[0])
            url = gb_url(did, chan.channel_id)
            if dev.stream is None or dev.stream.url != url:
                new = replace(dev, stream=self._stream_for(did, chan.channel_id, dev), modified_at=now)
                self._remember_url(new, url)
                await self.box.update_device(new)
                changed.append(new)
            self._status_after(did, online)
        else:
            subs = list(dev.sub_device_ids)
            for chan in catalog.channels:
                if chan.parental:
                    continue  # a directory (business group) node, not a camera
                cid = chan.channel_id
                url = gb_url(did, cid)
                known = self.registry.get(cid)
                if known is None:
                    new = Device(
                        device_id=cid,
                        device_type=DeviceType.IPC,
                        name=chan.name[:64] or cid,
                        project_id=dev.project_id,
                        parent_id=did,
                        address=chan.address[:64],
                        vendor=chan.manufacturer[:64],
                        model=chan.model[:64],
                        longitude=chan.longitude,
                        latitude=chan.latitude,
                        city_code=dev.city_code,
                        declared=False,
                        status=DeviceStatus.PENDING,
                        stream=self._stream_for(did, cid, None),
                        created_at=now,
                        modified_at=now,
                    )
                    self.overlay.extras[cid] = DeviceExtra(in_protocol="GBT28181", stream_url=url)
                    await self.box.add_device(new)
                    changed.append(new)
                elif known.parent_id == did and (known.stream is None or known.stream.url != url):
                    upd = replace(known, stream=self._stream_for(did, cid, known), modified_at=now)
                    self._remember_url(upd, url)
                    await self.box.update_device(upd)
                    changed.append(upd)
                if cid not in subs:
                    subs.append(cid)
                self._status_after(cid, online and chan.online)
            if tuple(subs) != dev.sub_device_ids:
                parent = replace(dev, sub_device_ids=tuple(subs), modified_at=now)
                await self.box.update_device(parent)
                changed.append(parent)
            self._status_after(did, online)
        if changed and not all(d.declared for d in changed):
            self._save([d for d in changed if not d.declared])
        log.info(
            "gb28181 catalog",
            extra={"device": did, "channels": len(catalog.channels), "complete": catalog.complete},
        )

    def _remember_url(self, dev: Device, url: str) -> None:
        if not dev.declared:
            extra = self.overlay.extras.setdefault(dev.device_id, DeviceExtra(in_protocol="GBT28181"))
            extra.stream_url = url

    def _status_after(self, device_id: str, online: bool) -> None:
        """Cameras.add made a new stream PENDING: registration says what the device is."""
        dev = self.registry.get(device_id)
        if dev is not None:
            dev.status = DeviceStatus.ONLINE if online else DeviceStatus.OFFLINE

    # --- media (called on a stream's worker thread) -------------------------------------------------

    def _open_feed(self, url: str, timeout_s: float) -> PacketFeed:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise FeedUnavailable("the GB/T 28181 server is not running")
        device_id, channel_id = parse_gb_url(url)

        def closed() -> None:
            loop.call_soon_threadsafe(self._close_feed, feed)

        feed = PacketFeed(on_close=closed)
        fut = asyncio.run_coroutine_threadsafe(self._play(device_id, channel_id, feed), loop)
        try:
            fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            feed.close()
            raise FeedUnavailable(f"{device_id}/{channel_id}: no answer in {timeout_s:g} s") from None
        except Exception as exc:
            feed.close()
            raise FeedUnavailable(f"{device_id}/{channel_id}: {exc}") from None
        return feed

    async def _play(self, device_id: str, channel_id: str, feed: PacketFeed) -> None:
        self._feeds[id(feed)] = (feed, None)
        try:
            session = await self.service.play(
                device_id,
                channel_id,
                feed.push,
                feed.end,
                mode=self.media_mode(device_id),
                fallback=self.cfg.tcp_fallback,
            )
        except Exception:
            self.play_failures += 1
            self._feeds.pop(id(feed), None)
            raise
        self.plays += 1
        if feed.closed or id(feed) not in self._feeds:
            self.service.stop_play(session)
            return
        self._feeds[id(feed)] = (feed, session)

    def _close_feed(self, feed: PacketFeed) -> None:
        held = self._feeds.pop(id(feed), None)
        if held is not None and held[1] is not None:
            self.service.stop_play(held[1])
