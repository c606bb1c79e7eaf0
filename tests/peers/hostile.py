"""Hostile media peers: servers that answer a camera URL the way an attacker or a broken box would.

All listen on 127.0.0.1 on a port picked at run time and run in threads of the test process (they are the
far end of real TCP connections; nothing is mocked). Each counts its connections so a test can tell that
the agent really talked to it.

- :class:`HostileHttp` serves ``/endless.m3u8`` (a master playlist that never ends, as fast as the socket
  takes it; also as ``/endless``, a URL that does not say it is HLS), ``/many.m3u8`` (a finite master playlist with thousands of variants), ``/huge.m3u8`` (a media
  playlist far past any sane size), ``/slow-headers.m3u8`` (response headers that never end, a byte at a
  time), ``/trickle.m3u8`` (a playlist sent a few bytes at a time, forever)
  and ``/v<N>.m3u8`` (a small valid media playlist whose segments do not exist).
- :class:`HostileRtsp` answers every request line with ``RTSP/1.0 200 OK`` and a ``Content-Length`` of its
  choice, then streams (or trickles) filler bytes; with ``silent=True`` it accepts and never answers; with
  ``play=True`` it plays a correct but slow camera (each reply after ``reply_delay`` s, a valid SDP, SETUP
  and PLAY) that then sends RTP packets which never let the probe find the stream's parameters; with
  ``header_flood=True`` it sends header lines that never end.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 64 * 1024
SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"a=control:rtsp://127.0.0.1:%d/stream\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    b"a=control:track1\r\n"
)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self.server.owner.count(self.path)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/slow-headers.m3u8":  # a status line, then one header that never ends
                self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                while not self.server.owner.closed.wait(0.05):
                    self.wfile.write(b"a")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apple.mpegurl")
            self.end_headers()
            if path in ("/endless.m3u8", "/endless"):
                self._endless_master()
            elif path == "/many.m3u8":
                lines = b"".join(
                    b"#EXT-X-STREAM-INF:BANDWIDTH=%d\nv%d.m3u8\n" % (1000 + i, i) for i in range(5000)
                )
                self.wfile.write(b"#EXTM3U\n" + lines)
            elif path == "/huge.m3u8":
                self.wfile.write(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n")
                entry = b"#EXTINF:2.0,\nsegment-with-a-rather-long-name-%08d.ts\n"
                for i in range(0, 2_000_000, 1000):
                    if self.server.owner.closed.is_set():
                        return
                    self.wfile.write(b"".join(entry % j for j in range(i, i + 1000)))
            elif path == "/trickle.m3u8":
                self.wfile.write(b"#EXTM3U\n")
                while not self.server.owner.closed.is_set():
                    self.wfile.write(b"#EXT-X-STREAM-INF:BANDWIDTH=1\n"[:4])
                    time.sleep(0.05)
            else:
                self.wfile.write(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nnope.ts\n#EXT-X-ENDLIST\n")
        except OSError:
            return

    def _endless_master(self) -> None:
        self.wfile.write(b"#EXTM3U\n")
        i = 0
        while not self.server.owner.closed.is_set():
            self.wfile.write(
                b"".join(b"#EXT-X-STREAM-INF:BANDWIDTH=%d\nv%d.m3u8\n" % (j, j) for j in range(i, i + 1000))
            )
            i += 1000


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: HostileHttp


class HostileHttp:
    """An HTTP server on 127.0.0.1 serving hostile HLS playlists (see the module docstring)."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def count(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for p in self.requests if p.split("?", 1)[0] == path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2)


class HostileRtsp:
    """A TCP server on 127.0.0.1 that speaks just enough RTSP to be dangerous (see the module docstring)."""

    def __init__(
        self,
        *,
        content_length: int = 2147483647,
        trickle: bool = False,
        silent: bool = False,
        play: bool = False,
        reply_delay: float = 0.0,
        header_flood: bool = False,
    ):
        self.content_length = content_length
        self.trickle = trickle
        self.silent = silent
        self.play = play
        self.reply_delay = reply_delay
        self.header_flood = header_flood
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self.connections = 0
        self._conns: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            if not self.silent:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self.closed.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                cseq = b"1"
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"cseq:"):
                        cseq = line.split(b":", 1)[1].strip()
                if self.header_flood:  # a status line, then header lines without end
                    conn.sendall(b"RTSP/1.0 200 OK\r\nCSeq: " + cseq + b"\r\n")
                    line = b"X-Flood: " + b"a" * 100 + b"\r\n"
                    while not self.closed.is_set():
                        conn.sendall(line * 600)
                    return
                if self.play:
                    if self.closed.wait(self.reply_delay):
                        return
                    if self._play(conn, head, cseq):
                        return
                    continue
                if head.startswith(b"OPTIONS"):
                    conn.sendall(
                        b"RTSP/1.0 200 OK\r\nCSeq: " + cseq + b"\r\nPublic: DESCRIBE, SETUP, PLAY\r\n\r\n"
                    )
                    continue
                conn.sendall(
                    b"RTSP/1.0 200 OK\r\nCSeq: %s\r\nContent-Type: application/sdp\r\n"
                    b"Content-Length: %d\r\n\r\n" % (cseq, self.content_length)
                )
                filler = b"a" * (1 if self.trickle else CHUNK)
                while not self.closed.is_set():
                    conn.sendall(filler)
                    if self.trickle:
                        time.sleep(0.05)
        except OSError:
            return
        finally:
            conn.close()

    def _play(self, conn: socket.socket, head: bytes, cseq: bytes) -> bool:
        """Answer like a camera; after PLAY, send junk RTP until closed (True: the connection is done)."""
        ok = b"RTSP/1.0 200 OK\r\nCSeq: " + cseq + b"\r\n"
        if head.startswith(b"OPTIONS"):
            conn.sendall(ok + b"Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n")
        elif head.startswith(b"DESCRIBE"):
            sdp = SDP % self.port
            conn.sendall(ok + b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(sdp) + sdp)
        elif head.startswith(b"SETUP"):
            conn.sendall(ok + b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678\r\n\r\n")
        elif head.startswith(b"PLAY"):
            conn.sendall(ok + b"Session: 12345678\r\n\r\n")
            seq = 0
            while not self.closed.wait(0.1):
                # A non-IDR slice with no SPS/PPS ever sent: the probe can never learn the frame size.
                rtp = (
                    b"\x80\x60"
                    + seq.to_bytes(2, "big")
                    + b"\x00\x00\x00\x00"
                    + b"\x00\x00\x00\x01"
                    + b"\x41"
                    + b"\x9a" * 50
                )
                conn.sendall(b"$\x00" + len(rtp).to_bytes(2, "big") + rtp)
                seq = (seq + 1) & 0xFFFF
            return True
        else:
            conn.sendall(ok + b"Session: 12345678\r\n\r\n")
        return False

    def stop(self) -> None:
        self.closed.set()
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._thread.join(2)


@contextmanager
def hostile_http() -> Iterator[HostileHttp]:
    server = HostileHttp()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def hostile_rtsp(**kwargs: object) -> Iterator[HostileRtsp]:
    server = HostileRtsp(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
