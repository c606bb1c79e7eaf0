"""What the device user agent reports: small dataclasses, nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from .sdp import GbMediaOffer


@dataclass(frozen=True, slots=True)
class Registered:
    expires: int
    time_offset_s: float | None


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """A REGISTER cycle failed; the next attempt is in ``retry_in_s``."""

    status: int | None
    reason: str
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class RegistrationLost:
    """We were registered and no longer are (keepalive misses, 404/403 to a keepalive, failed refresh)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unregistered:
    status: int | None


@dataclass(frozen=True, slots=True)
class KeepaliveMissed:
    misses: int
    status: int | None


@dataclass(frozen=True, slots=True)
class QueryReceived:
    cmd_type: str
    sn: int
    device_id: str


@dataclass(frozen=True, slots=True)
class ControlReceived:
    command: str
    device_id: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class TeleBoot:
    """DeviceControl TeleBoot: the owner should restart its pipelines."""

    device_id: str


@dataclass(frozen=True, slots=True)
class InviteReceived:
    """Answer with ``DeviceUA.answer_invite`` (after opening the source) or ``reject_invite``."""

    call_id: str
    channel_id: str
    offer: GbMediaOffer


@dataclass(frozen=True, slots=True)
class MediaSessionStarted:
    """ACK received: start sending (and, for TCP-PASSIVE, connect to the offer's address first)."""

    call_id: str
    channel_id: str
    offer: GbMediaOffer
    local_port: int


@dataclass(frozen=True, slots=True)
class ByeReceived:
    call_id: str
    channel_id: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """A media session ended for another reason (CANCEL, no ACK); stop sending."""

    call_id: str
    channel_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlaybackControl:
    """MANSRTSP in an INFO of a Playback/Download session: ``PLAY`` (resume, with ``npt`` a seek to that many
    seconds from the range start, with ``scale`` a speed), ``PAUSE``, or ``TEARDOWN``."""

    call_id: str
    method: str
    npt: float | None = None
    scale: float | None = None


Event = (
    Registered
    | RegistrationFailed
    | RegistrationLost
    | Unregistered
    | KeepaliveMissed
    | QueryReceived
    | ControlReceived
    | TeleBoot
    | InviteReceived
    | MediaSessionStarted
    | ByeReceived
    | SessionEnded
    | PlaybackControl
)
