"""A tiny RTSP server on gst-rtsp-server, run with Debian's /usr/bin/python3 (python3-gi).

Serves an endless live test pattern (H.264) or an H.264 Matroska file at rtsp://127.0.0.1:PORT/MOUNT, or every
``*.mkv`` of a folder at rtsp://127.0.0.1:PORT/NAME.mkv (``--folder``: one process, C threads, for many cameras),
over UDP and TCP. Prints ``READY <port>`` once listening, then ``CONNECT <ip>`` / ``DISCONNECT <ip>`` per RTSP
client connection and ``SESSION`` per RTSP session set up, so tests can count what the server really saw.
"""

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def file_launch(path):
    """The pipeline that plays one H.264 Matroska file at its own pace (by its timestamps)."""
    return f'( filesrc location="{path}" ! matroskademux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mount", default="/stream")
    ap.add_argument("--file", help="H.264 Matroska file to serve instead of the live test pattern")
    ap.add_argument("--folder", help="serve every *.mkv (H.264) in this folder at /<file name>")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop", type=int, default=25, help="frames between keyframes")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    args = ap.parse_args()

    Gst.init(None)
    mounts = {}
    if args.folder:
        for path in sorted(Path(args.folder).glob("*.mkv")):
            mounts["/" + path.name] = file_launch(str(path))
    elif args.file:
        mounts[args.mount] = file_launch(args.file)
    else:
        launch = (
            f"( videotestsrc is-live=true pattern=ball "
            f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} bframes=0 "
            "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        mounts[args.mount] = launch
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    for mount, launch in mounts.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)
        server.get_mount_points().add_factory(mount, factory)

    def on_client(_server, client):
        ip = client.get_connection().get_ip()
        say(f"CONNECT {ip}")
        client.connect("closed", lambda _c: say(f"DISCONNECT {ip}"))
        client.connect("new-session", lambda _c, _s: say("SESSION"))

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        say("ERROR could not listen")
        return 1
    loop = GLib.MainLoop()
    # Sessions of clients that vanish without TEARDOWN time out; clean them up as gst-rtsp-server suggests.
    GLib.timeout_add_seconds(2, lambda: (server.get_session_pool().cleanup(), True)[1])
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    say(f"READY {server.get_bound_port()}")
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
