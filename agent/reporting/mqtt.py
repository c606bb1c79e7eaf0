"""MQTT sink (paho-mqtt 2.x): targets at QoS 1, retained agent/device/stream status, last will "offline".

Topics, with ``p = {topic_prefix}/{site}``:

- ``p/targets/{device_id}``: one JSON target record per message (SearchTarget names plus TargetId), QoS 1.
  A link whose file was pruned before delivery is sent empty; without the crop the message has
  ``"MediaGone": true``.
- ``p/status``: retained ``online`` / ``offline``; the broker publishes ``offline`` (the last will) when the
  agent vanishes without saying goodbye.
- ``p/devices/{device_id}/status`` and ``p/streams/{device_id}/status``: retained JSON, re-sent after every
  reconnect.

paho runs its network loop on its own thread and reconnects with exponential backoff between
``reconnect_min_s`` and ``reconnect_max_s`` (``mqtt.reconnect_min_s``/``reconnect_max_s``). While it waits, a
cheap TCP probe of the broker's port runs every 0.25 s: when a broker that refused connections accepts one again,
the wait is cut short and the sink reconnects at once. An outage is logged once at WARNING when it starts and
once when it ends, with its duration; paho's own "Client is not connected" ERROR per attempt is not shown.

Messages handed to paho stay in its in-flight list across reconnects and are re-sent by it (DUP), so after an
outage they go out again in their original order; the outbox row is deleted when the PUBACK arrives. A process
crash loses only paho's memory: the rows are still in the outbox and are sent again by the next process (same
TargetId).

Long because: one paho client's connection state, back-off, in-flight acknowledgements and status topics belong
together; splitting them would split one state machine.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.analytics.targets import TargetRecord
from agent.reporting.sinks import SinkContext
from agent.storage.outbox import OutboxEntry

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
_TOPIC_UNSAFE = re.compile(r"[+#/\x00]")


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def topic_segment(text: str) -> str:
    """A topic level made from a name: MQTT wildcards, separators and NUL become ``_``."""
    return _TOPIC_UNSAFE.sub("_", text) or "_"


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Connection and topic settings. ``protocol`` is ``"3.1.1"`` or ``"5"``; TLS is on when ``tls`` is true
    (``ca_certs`` None means the system's CAs)."""

    host: str = "127.0.0.1"
    port: int = 1883
    site: str = "site"
    topic_prefix: str = "vcs-edge"
    client_id: str = ""
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    max_inflight: int = 100
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 10.0
    resend_timeout_s: float = 60.0
    probe_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.protocol not in ("3.1.1", "5"):
            raise ValueError(f"MQTT protocol {self.protocol!r} must be '3.1.1' or '5'")
        if not 0 < self.port < 65536:
            raise ValueError(f"MQTT port {self.port} is out of range")
        if not 1 <= self.max_inflight <= 65000:
            raise ValueError("max_inflight must be between 1 and 65000")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("reconnect delays must satisfy 0 < min <= max")
        if self.password is not None and self.username is None:
            raise ValueError("an MQTT password needs a username")


class _QuietPahoFilter(logging.Filter):
    """Drops paho's ERROR "Client is not connected" (one per reconnect attempt); the sink logs the outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Client is not connected")


_PAHO_LOG = logging.getLogger("paho.mqtt")
_PAHO_LOG.addFilter(_QuietPahoFilter())


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on host:port (closed at once, nothing sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class _Client(mqtt.Client):
    """paho's client with its reconnect wait cut short when the broker's port accepts TCP again.

    ``_reconnect_wait`` is paho's (2.x) hook between attempts; this keeps its exponential back-off and adds the
    probe. The wait ends early only when the broker's port was seen closed (the last attempt could not connect,
    or a probe failed) and a probe then succeeds: the broker came back. A broker that accepts TCP but refuses
    the MQTT connection (bad credentials, a client id taken over) is still retried at the back-off, never in a
    tight loop.
    """

    probe: Callable[[], bool] | None = None
    probe_interval_s: float = 0.25
    port_closed = False  # the last connection attempt failed before MQTT (refused, unreachable)
    probes_refused = 0

    def _reconnect_wait(self) -> None:
        with self._reconnect_delay_mutex:
            if self._reconnect_delay is None:
                self._reconnect_delay = self._reconnect_min_delay
            else:
                self._reconnect_delay = min(self._reconnect_delay * 2, self._reconnect_max_delay)
            deadline = time.monotonic() + self._reconnect_delay
        refused = self.port_closed
        while self._may_wait() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, self.probe_interval_s))
            if self.probe is None:
                continue
            if not self.probe():
                refused = True
                self.probes_refused += 1
            elif refused:
                return  # the broker is back: reconnect now

    def _may_wait(self) -> bool:
        return not self._thread_terminate and self._state not in (
            _ConnectionState.MQTT_CS_DISCONNECTING,
            _ConnectionState.MQTT_CS_DISCONNECTED,
        )


class MqttSink:
    """The MQTT sink. ``url_for`` turns media paths into links for the records (signed by the agent).

    Counters: ``published``, ``acked``, ``rejected`` (broker refused, MQTT 5 reason >= 0x80), ``malformed``
    (outbox body that is not a target record; dropped), ``connects``, ``disconnects``, ``connect_failures``,
    ``outages``, ``probes_refused`` (TCP probes the closed port refused); ``connected`` is the current state,
    ``last_outage_s`` the length of the last outage.
    """

    name = "mqtt"

    def __init__(self, settings: MqttSettings, url_for: Callable[[str], str] | None = None) -> None:
        self.settings = settings
        self.url_for = url_for
        base = f"{topic_segment(settings.topic_prefix)}/{topic_segment(settings.site)}"
        self.status_topic = f"{base}/status"
        self._base = base
        self.published = 0
        self.acked = 0
        self.rejected = 0
        self.malformed = 0
        self.connects = 0
        self.disconnects = 0
        self.connect_failures = 0
        self.outages = 0
        self.last_outage_s = 0.0
        self.connected = False
        self._outage_since: float | None = None
        self._ctx: SinkContext | None = None
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # mid -> outbox id
        self._early: dict[int, bool] = {}  # mid -> ok, for PUBACKs that beat the mapping
        self._untracked: set[int] = set()  # status publishes
        self._status: dict[str, bytes] = {}
        self._barrier = False
        self._connected_at = 0.0
        self._stopping = False
        v5 = settings.protocol == "5"
        self._v5 = v5
        client_id = settings.client_id or f"vcs-edge-{topic_segment(settings.site)}"
        self._client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        c = self._client
        probe_host = (
            "127.0.0.1" if settings.host in ("0.0.0.0", "") else "::1" if settings.host == "::" else ""
        )
        probe_host = probe_host or settings.host
        c.probe = lambda: tcp_accepts(probe_host, settings.port, timeout=settings.probe_interval_s)
        c.probe_interval_s = settings.probe_interval_s
        c.enable_logger(_PAHO_LOG)
        c.max_inflight_messages_set(settings.max_inflight)
        # paho types the delays as int but only adds and compares them; fractions of a second work.
        c.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)  # type: ignore[arg-type]
        if settings.username is not None:
            c.username_pw_set(settings.username, settings.password)
        if settings.tls:
            try:
                c.tls_set(
                    ca_certs=settings.ca_certs,
                    certfile=settings.certfile,
                    keyfile=settings.keyfile,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"MQTT TLS files (ca_certs/certfile/keyfile) cannot be used: {exc}"
                ) from None
            if settings.tls_insecure:
                c.tls_insecure_set(True)
        c.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish

    # -- topics --------------------------------------------------------------------------------------------

    def topic_for(self, entry: OutboxEntry) -> str:
        kind = "targets" if entry.kind == "target" else topic_segment(entry.kind)
        return f"{self._base}/{kind}/{topic_segment(entry.device_id)}"

    @property
    def probes_refused(self) -> int:
        return self._client.probes_refused

    def device_status_topic(self, device_id: str) -> str:
        return f"{self._base}/devices/{topic_segment(device_id)}/status"

    def stream_status_topic(self, device_id: str) -> str:
        return f"{self._base}/streams/{topic_segment(device_id)}/status"

    # -- Sink ----------------------------------------------------------------------------------------------

    def start(self, ctx: SinkContext) -> None:
        """Connect in the background; a broker that is down now is retried with backoff."""
        self._ctx = ctx
        s = self.settings
        props = None
        if self._v5:
            props = _properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        self._client.connect_async(
            s.host, s.port, keepalive=s.keepalive_s, clean_start=True, properties=props
        )
        self._client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained) if connected, disconnect, stop paho's thread. Undelivered rows stay."""
        self._stopping = True
        if self.connected:
            try:
                self._publish_untracked(self.status_topic, OFFLINE).wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: could not publish offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected = False

    def capacity(self) -> int:
        if not self.connected:
            return 0
        rewind = False
        with self._lock:
            if self._barrier:
                # After a reconnect paho re-sends what was in flight; new entries wait until those are
                # acknowledged so that each camera's order holds. If paho never settles them, send them again
                # from the outbox instead (duplicates with the same TargetId, never a loss).
                if not self._inflight:
                    self._barrier = False
                elif time.monotonic() - self._connected_at > self.settings.resend_timeout_s:
                    log.warning(
                        "mqtt: %d in-flight entries not settled after reconnect; resending",
                        len(self._inflight),
                    )
                    self._untracked.update(self._inflight)
                    self._inflight.clear()
                    self._barrier = False
                    rewind = True
                else:
                    return 0
            room = self.settings.max_inflight - len(self._inflight)
        if rewind and self._ctx is not None:
            self._ctx.rewind()
            return 0
        return room

    def deliver(self, entries: Sequence[OutboxEntry]) -> None:
        ctx = self._ctx
        assert ctx is not None, "deliver() before start()"
        for entry in entries:
            payload = self._payload(entry)
            if payload is None:
                self.malformed += 1
                ctx.ack([entry.id])
                continue
            try:
                info = self._client.publish(self.topic_for(entry), payload, qos=1, properties=self._props())
            except ValueError as exc:
                # paho refuses it outright (payload too large, bad topic): it can never be sent; drop loudly.
                log.error("mqtt: dropping outbox entry %d (%s): %s", entry.id, entry.key, exc)
                self.rejected += 1
                ctx.ack([entry.id])
                continue
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # Not queued by paho: send it again from the outbox later.
                log.warning("mqtt: publish of entry %d not queued (rc=%s); rewinding", entry.id, info.rc)
                ctx.rewind()
                return
            self.published += 1
            with self._lock:
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    self._barrier = True  # the link dropped just now: paho re-sends this one first
                ok = self._early.pop(info.mid, None)
                if ok is None:
                    self._inflight[info.mid] = entry.id
                    continue
            self._settled(entry.id, ok)

    # -- status --------------------------------------------------------------------------------------------

    def publish_device_status(self, device_id: str, status: Mapping[str, Any]) -> None:
        """Retained device status (any JSON object); kept and re-sent after reconnects."""
        self._publish_status(self.device_status_topic(device_id), status)

    def publish_stream_status(self, device_id: str, status: Mapping[str, Any]) -> None:
        """Retained stream status (any JSON object); kept and re-sent after reconnects."""
        self._publish_status(self.stream_status_topic(device_id), status)

    def _publish_status(self, topic: str, status: Mapping[str, Any]) -> None:
        payload = json.dumps(dict(status), separators=(",", ":"), ensure_ascii=False).encode()
        with self._lock:
            self._status[topic] = payload
        if self.connected:
            self._publish_untracked(topic, payload)

    def _publish_untracked(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=1, retain=True)
        with self._lock:
            if self._early.pop(info.mid, None) is None:
                self._untracked.add(info.mid)
        return info

    # -- paho callbacks (paho's thread) ---------------------------------------------------------------------

    def _payload(self, entry: OutboxEntry) -> bytes | None:
        if entry.kind != "target":
            return entry.body.encode()
        try:
            record = TargetRecord.from_json(entry.body)
            api = record.to_api(self.url_for)
            if not record.target_image_path:
                # Disk pressure removed the media before delivery: no link is sent rather than one to a 404.
                api["MediaGone"] = True
            return json.dumps(api, separators=(",", ":"), ensure_ascii=False).encode()
        except ValueError as exc:
            log.error("mqtt: outbox entry %d is not a target record (%s); dropped", entry.id, exc)
            return None

    def _props(self) -> Properties | None:
        if not self._v5:
            return None
        props = _properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        return props

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._client.port_closed = False
        if reason.is_failure:
            self.connect_failures += 1
            self._outage(f"connection refused ({reason}) by broker")
            return
        self.connects += 1
        self._connected_at = time.monotonic()
        if self._outage_since is not None:
            self.last_outage_s = self._connected_at - self._outage_since
            self._outage_since = None
            log.warning(
                "mqtt: broker %s:%d back after %.1f s",
                self.settings.host,
                self.settings.port,
                self.last_outage_s,
            )
        else:
            log.info("mqtt: connected to %s:%d", self.settings.host, self.settings.port)
        self._publish_untracked(self.status_topic, ONLINE)
        with self._lock:
            statuses = list(self._status.items())
        for topic, payload in statuses:
            self._publish_untracked(topic, payload)
        self.connected = True
        if self._ctx is not None:
            self._ctx.wake()

    def _outage(self, why: str) -> None:
        """The first failure of an outage logs one WARNING; the others are DEBUG."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.outages += 1
            log.warning(
                "mqtt: %s %s:%d; retrying every %g..%g s, and at once when it accepts connections again",
                why,
                self.settings.host,
                self.settings.port,
                self.settings.reconnect_min_s,
                self.settings.reconnect_max_s,
            )
        else:
            log.debug("mqtt: %s %s:%d; still retrying", why, self.settings.host, self.settings.port)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.connect_failures += 1
        self._client.port_closed = True
        if not self._stopping:
            self._outage("cannot reach broker")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self.connected
        self.connected = False
        with self._lock:
            if self._inflight:
                self._barrier = True
        if was and not self._stopping:
            self.disconnects += 1
            self._outage(f"disconnected ({reason}) from")

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        ok = not reason.is_failure
        with self._lock:
            if mid in self._untracked:
                self._untracked.discard(mid)
                return
            oid = self._inflight.pop(mid, None)
            if oid is None:
                self._early[mid] = ok
                return
        self._settled(oid, ok)

    def _settled(self, outbox_id: int, ok: bool) -> None:
        if ok:
            self.acked += 1
        else:
            self.rejected += 1
            log.error("mqtt: broker refused outbox entry %d; dropped", outbox_id)
        if self._ctx is not None:
            self._ctx.ack([outbox_id])
