"""Real media peers for the stream tests: a gst-rtsp-server process and an HLS directory over HTTP.

Both listen on 127.0.0.1 only, on ports picked at run time, and are stopped by the test that started them.
The RTSP server reports every client connection and RTSP session on its stdout, which is how tests check
that an on-demand camera carries no session outside its window.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_GST = Path(__file__).with_name("rtsp_gst.py")


@functools.cache
def gst_rtsp_missing() -> str | None:
    """Why the gst RTSP server cannot run here, or None if it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return "Debian's /usr/bin/python3 is missing"
    probe = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay')"
    )
    proc = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        return (
            "gst-rtsp-server is not installed (apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 "
            "gstreamer1.0-rtsp gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly): " + proc.stderr[-200:]
        )
    return None


def require_gst() -> None:
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` s passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class RtspServer:
    """A gst-rtsp-server child process serving a live H.264 test pattern (or a file) at ``url``."""

    def __init__(self, *, mount: str = "/stream", fps: int = 25, gop: int = 25, file: Path | None = None):
        self.mount = mount
        self.fps = fps
        self.gop = gop
        self.file = file
        self.port = 0
        self.lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def start(self, timeout: float = 15.0) -> RtspServer:
        """Start (again, on the same port once one was chosen) and wait for READY."""
        args = [SYSTEM_PYTHON, str(RTSP_GST), "--port", str(self.port), "--mount", self.mount,
                "--fps", str(self.fps), "--gop", str(self.gop)]  # fmt: skip
        if self.file is not None:
            args += ["--file", str(self.file)]
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert proc.stdout is not None
            first = proc.stdout.readline().strip()
            if first.startswith("READY"):
                break
            proc.wait(5)
            if time.monotonic() > deadline:  # e.g. the old socket is still in TIME_WAIT
                raise RuntimeError(f"rtsp_gst.py did not start: {first!r}")
            time.sleep(0.3)
        self.port = int(first.split()[1])
        self._proc = proc
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.lines.append(line.strip())

    def count(self, word: str) -> int:
        with self._lock:
            return sum(1 for line in self.lines if line.split()[:1] == [word])

    @property
    def connects(self) -> int:
        return self.count("CONNECT")

    @property
    def disconnects(self) -> int:
        return self.count("DISCONNECT")

    @property
    def sessions(self) -> int:
        return self.count("SESSION")

    @property
    def open_connections(self) -> int:
        return self.connects - self.disconnects

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): its sockets stay open but nothing flows, a real stall."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)


@contextmanager
def rtsp_server(**kwargs: object) -> Iterator[RtspServer]:
    require_gst()
    server = RtspServer(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


class HlsServer:
    """A static HTTP server on 127.0.0.1 over a directory of HLS segments made by ffmpeg."""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def url(self, name: str = "index.m3u8") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2)


def make_hls(src: Path, directory: Path, *, segment_s: int = 2) -> Path:
    """Cut ``src`` (H.264) into an HLS VOD playlist with ffmpeg, without re-encoding."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed (apt-get install -y ffmpeg)")
    directory.mkdir(parents=True, exist_ok=True)
    playlist = directory / "index.m3u8"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", str(src), "-c", "copy", "-f", "hls", "-hls_time", str(segment_s),
         "-hls_list_size", "0", str(playlist)],
        check=True,
    )  # fmt: skip
    return playlist


@contextmanager
def hls_server(src: Path, directory: Path) -> Iterator[HlsServer]:
    make_hls(src, directory)
    server = HlsServer(directory)
    try:
        yield server
    finally:
        server.stop()
