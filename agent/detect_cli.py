"""``vcs-edge detect FILE...``: the site's (or the bundled) detectors on pictures and video files.

What a user trying the box on their own pictures runs: each PNG/JPEG (or any image OpenCV reads) is one result,
a video file gives one result per second of presentation time (the first frame at or after 0 s, 1 s, 2 s ... from
its first frame, as an instance with Spf=1 would sample it), each with its ``pts`` in seconds.

``--json`` prints one line per result::

    {"file": "a.jpg", "width": 768, "height": 576,
     "detections": [{"type": "Body", "box": [x1, y1, x2, y2], "score": 0.87, "attributes": {"CocoClass": "person"}}]}

Boxes are in source pixels. ``--algorithm`` picks the detectors and which target types are shown: ``face``,
``body``, ``face_body``, ``vehicle`` and ``all``, as the shipped algorithm catalogue has them (``body`` is the
body/vehicle model: Body, and Motor and NonMotor with NanoDet; ``vehicle`` the same model's Motor and NonMotor
only; ``all``, the default, every type). ``--draw DIR`` writes each result as an annotated PNG (``a.jpg.png``, and
``clip.mkv_0002.000s.png`` for the frame at 2 s). A file that cannot be
read is reported on stderr and counted; the others still run, and the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from agent.config import DetectionConfig
from agent.config.algorithms import DEFAULT_ALGORITHMS
from pipelines.detect.detection import Detection, Detector, Image

#: --algorithm -> (which detectors, which target types are shown): the shipped catalogue's named ids
ALGORITHMS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    a.id: (tuple(a.detectors), a.reports or frozenset({"Face", "Body", "Motor", "NonMotor"}))
    for a in DEFAULT_ALGORITHMS
    if not a.id.isdigit()
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
#: BGR colours of the boxes --draw paints
COLOURS: dict[str, tuple[int, int, int]] = {
    "Face": (0, 200, 255),
    "Body": (0, 220, 0),
    "Motor": (255, 80, 0),
    "NonMotor": (255, 0, 200),
}


class InputError(Exception):
    """A file that is not a readable picture or video."""


@dataclass(frozen=True, slots=True)
class Picture:
    """One image to detect on: a whole picture, or one sampled video frame (``pts`` in seconds)."""

    file: str
    image: Image
    pts: float | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="PNG/JPEG pictures or video files")
    p.add_argument("--algorithm", choices=list(ALGORITHMS), default="all", help="default: all")
    p.add_argument("--json", action="store_true", help="one JSON line per picture or sampled video frame")
    p.add_argument("--draw", metavar="DIR", type=Path, help="write annotated PNGs into DIR")
    p.add_argument("-c", "--config", help="site YAML file whose detection section to use (default: bundled)")


def pictures(path: str) -> Iterator[Picture]:
    """The picture in ``path``, or its video frames at one per second of pts; ``InputError`` if neither."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        decoded = cv2.imdecode(np.fromfile(str(p), dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise InputError(f"{path}: not a picture OpenCV can read")
        yield Picture(path, np.ascontiguousarray(decoded, dtype=np.uint8))
        return
    yield from _video_frames(path)


def _video_frames(path: str) -> Iterator[Picture]:
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: neither a picture nor a video ffmpeg can open ({exc})") from exc
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        start: float | None = None
        next_t = 0.0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                start = frame.time if start is None else start
                t = frame.time - start
                if t + 1e-6 < next_t:
                    continue
                next_t = math.floor(t + 1e-6) + 1.0
                image = frame.to_ndarray(format="bgr24")
                yield Picture(path, np.ascontiguousarray(image, dtype=np.uint8), pts=round(t, 3))
        except av.FFmpegError as exc:
            raise InputError(f"{path}: video decoding failed ({exc})") from exc
        if start is None:
            raise InputError(f"{path}: no decodable video frame")


def detectors_for(cfg: DetectionConfig, algorithm: str) -> list[Detector]:
    """Load only the models ``algorithm`` uses (no face embedder: detect shows boxes)."""
    from agent.analytics.pipeline import Models

    wanted, _ = ALGORITHMS[algorithm]
    face = cfg.face.model_copy(update={"enabled": "face" in wanted, "embed": False})
    body = cfg.body.model_copy(update={"enabled": "body" in wanted})
    models = Models(cfg.model_copy(update={"face": face, "body": body}))
    return [d for d in (models.face, models.body) if d is not None]


def result(picture: Picture, found: Sequence[Detection], kinds: frozenset[str]) -> dict[str, Any]:
    h, w = picture.image.shape[:2]
    out: dict[str, Any] = {"file": picture.file}
    if picture.pts is not None:
        out["pts"] = picture.pts
    out["width"], out["height"] = int(w), int(h)
    out["detections"] = [
        {
            "type": d.kind,
            "box": [round(float(v), 1) for v in (d.x1, d.y1, d.x2, d.y2)],
            "score": round(float(d.score), 4),
            "attributes": dict(d.attributes),
        }
        for d in sorted(found, key=lambda d: -d.score)
        if d.kind in kinds
    ]
    return out


def draw(picture: Picture, res: dict[str, Any], out_dir: Path) -> Path:
    image = picture.image.copy()
    for d in res["detections"]:
        x1, y1, x2, y2 = (round(v) for v in d["box"])
        colour = COLOURS.get(d["type"], (255, 255, 255))
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        label = f"{d['attributes'].get('CocoClass', d['type'])} {d['score']:.2f}"
        cv2.putText(
            image, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA
        )
    base = Path(picture.file).name  # a.jpg and a.png do not overwrite each other's drawing
    name = f"{base}.png" if picture.pts is None else f"{base}_{picture.pts:08.3f}s.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")
    return path


def _table_line(res: dict[str, Any], out: TextIO) -> None:
    where = res["file"] + (f" @ {res['pts']:.3f}s" if "pts" in res else "")
    print(f"{where}  {res['width']}x{res['height']}  {len(res['detections'])} found", file=out)
    for d in res["detections"]:
        box = ",".join(str(round(v)) for v in d["box"])
        attrs = " ".join(f"{k}={v}" for k, v in d["attributes"].items())
        print(f"  {d['type']:<8} {d['score']:.2f}  {box:<20} {attrs}".rstrip(), file=out)


def run(args: argparse.Namespace, cfg: DetectionConfig, out: TextIO | None = None) -> int:
    from pipelines.detect import ModelError

    out = out or sys.stdout

    _, kinds = ALGORITHMS[args.algorithm]
    try:
        detectors = detectors_for(cfg, args.algorithm)
    except ModelError as exc:
        print(f"vcs-edge detect: {exc}", file=sys.stderr)
        return 1
    if not detectors:
        print(f"vcs-edge detect: the site file disables every model {args.algorithm!r} uses", file=sys.stderr)
        return 1
    if args.algorithm == "vehicle" and cfg.body.model == "ssdlite-person":
        print(
            "vcs-edge detect: ssdlite-person finds people only; use body.model nanodet for vehicles",
            file=sys.stderr,
        )
    failed = done = 0
    for path in args.files:
        try:
            for picture in pictures(path):
                found = [d for det in detectors for d in det.detect_batch([picture.image])[0]]
                res = result(picture, found, kinds)
                if args.draw is not None:
                    draw(picture, res, args.draw)
                if args.json:
                    print(json.dumps(res, ensure_ascii=False), file=out, flush=True)
                else:
                    _table_line(res, out)
                done += 1
        except (InputError, OSError) as exc:
            failed += 1
            print(f"vcs-edge detect: {exc}", file=sys.stderr)
    if failed:
        print(
            f"vcs-edge detect: {failed} of {len(args.files)} file(s) failed, {done} result(s)",
            file=sys.stderr,
        )
    return 1 if failed else 0
