"""Sample footage and images with real people, taken from registry packages.

No model or media hub is reachable from an edge box or CI, so the demo and the tests take their media from
packages that ship it: Debian's ``opencv-doc`` (``vtest.avi``, pedestrians) and the ``insightface`` wheel
(``t1.jpg``, a group photo with six faces). Files are cached under ``$VCS_EDGE_CACHE`` (default
``~/.cache/vcs-edge``) so each is fetched once per machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path


class SampleUnavailable(RuntimeError):
    """A sample could not be fetched; the message says which package and how to get it by hand."""


def cache_dir() -> Path:
    base = os.environ.get("VCS_EDGE_CACHE")
    if base:
        path = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "vcs-edge"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _media_dir() -> Path:
    path = cache_dir() / "media"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract_deb_member(deb: Path, member_suffix: str, dest: Path) -> None:
    """Take one file out of a .deb without dpkg (ar archive holding data.tar.*)."""
    if shutil.which("dpkg-deb"):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            hits = list(Path(tmp).rglob(member_suffix.rsplit("/", 1)[-1]))
            hits = [h for h in hits if str(h).endswith(member_suffix)]
            if not hits:
                raise SampleUnavailable(f"{deb.name} has no {member_suffix}")
            shutil.copyfile(hits[0], dest)
            return
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SampleUnavailable(f"{deb} is not a Debian package")
    pos = 8
    while pos < len(data):
        name = data[pos : pos + 16].decode().strip().rstrip("/")
        size = int(data[pos + 48 : pos + 58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            with tempfile.NamedTemporaryFile(suffix=name) as tf:
                tf.write(body)
                tf.flush()
                with tarfile.open(tf.name) as tar:
                    for m in tar.getmembers():
                        if m.name.endswith(member_suffix):
                            src = tar.extractfile(m)
                            assert src is not None
                            dest.write_bytes(src.read())
                            return
    raise SampleUnavailable(f"{deb.name} has no {member_suffix}")


def _from_opencv_doc(filename: str) -> Path:
    dest = _media_dir() / filename
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    if not shutil.which("apt-get"):
        raise SampleUnavailable(
            f"{filename} comes from Debian's opencv-doc package and apt-get is not available; "
            f"copy examples/data/{filename} from opencv-doc to {dest}"
        )
    deb = _opencv_doc_deb(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    _extract_deb_member(deb, f"examples/data/{filename}", part)
    part.replace(dest)
    return dest


def _opencv_doc_deb(dest: Path) -> Path:
    """The opencv-doc package file (about 95 MB), downloaded once into the cache."""
    folder = cache_dir() / "debs"
    folder.mkdir(exist_ok=True)
    have = sorted(folder.glob("opencv-doc_*.deb"))
    if have:
        return have[-1]

    def download() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["apt-get", "download", "-q", "opencv-doc"], cwd=folder, capture_output=True, text=True
        )

    proc = download()
    if proc.returncode != 0 and os.geteuid() == 0:
        # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        proc = download()
    have = sorted(folder.glob("opencv-doc_*.deb"))
    if proc.returncode != 0 or not have:
        raise SampleUnavailable(
            f"'apt-get download opencv-doc' failed ({proc.stderr.strip()[-300:]}); "
            "run 'apt-get update' first, or copy the file by hand to " + str(dest)
        )
    return have[-1]


def pedestrian_video() -> Path:
    """768x576, 795 frames at 10 fps, 4-7 people walking (OpenCV's vtest.avi)."""
    return _from_opencv_doc("vtest.avi")


def opencv_image(name: str) -> Path:
    """Another file of opencv-doc's examples/data (e.g. ``messi5.jpg``, ``basketball1.png``)."""
    return _from_opencv_doc(name)


def group_photo() -> Path:
    """The insightface wheel's t1.jpg: six people, six faces (MIT)."""
    dest = _media_dir() / "t1.jpg"
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "insightface==2.1",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("insightface-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise SampleUnavailable(
                f"'pip download --no-deps insightface==2.1' failed: {proc.stderr.strip()[-300:]}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            dest.with_suffix(".part").write_bytes(zf.read("insightface/data/images/t1.jpg"))
        dest.with_suffix(".part").replace(dest)
    return dest


def h264_clip(
    src: Path | None = None, *, gop_s: float = 2.0, out_name: str = "vtest_h264.mkv", loops: int = 1
) -> Path:
    """The pedestrian video re-encoded once to H.264 in Matroska (what RTSP servers and HLS want)."""
    import av

    dest = _media_dir() / out_name
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    src = src or pedestrian_video()
    part = dest.with_name(dest.name + ".part.mkv")
    with av.open(str(src)) as inp, av.open(str(part), "w") as out:
        in_stream = inp.streams.video[0]
        rate = in_stream.average_rate or 10
        stream = out.add_stream("libx264", rate=rate)
        stream.width = in_stream.codec_context.width
        stream.height = in_stream.codec_context.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, int(rate))
        gop = max(1, round(float(rate) * gop_s))
        stream.options = {
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": "0",
            "preset": "veryfast",
            "tune": "zerolatency",
        }
        index = 0
        for _ in range(loops):
            inp.seek(0)
            for frame in inp.decode(in_stream):
                vf = frame.reformat(format="yuv420p")
                vf.pts = index
                vf.time_base = stream.codec_context.time_base
                index += 1
                for packet in stream.encode(vf):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    part.replace(dest)
    return dest
