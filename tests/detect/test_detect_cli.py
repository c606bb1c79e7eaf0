"""``vcs-edge detect`` on real pictures and a real video file, with the bundled models.

The inputs are vtest.avi frames (walkers, a parked van and car) written as PNG and JPEG, and a 2.5 s H.264 clip
encoded from them with PyAV at 10 fps, so the one-per-second sampling by pts has three frames to take.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from agent.cli import main


def _clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, vtest_frames: list[np.ndarray]) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("detect-inputs")
    png, jpg = d / "street.png", d / "street.jpg"
    assert cv2.imwrite(str(png), vtest_frames[10])
    assert cv2.imwrite(str(jpg), vtest_frames[40], [cv2.IMWRITE_JPEG_QUALITY, 92])
    video = _clip(d / "walk.mkv", [vtest_frames[20 + i // 10] for i in range(25)])
    bad = d / "notes.jpg"
    bad.write_bytes(b"this is not a picture")
    bad_video = d / "broken.mkv"
    bad_video.write_bytes(b"\x1aE\xdf\xa3 not really matroska" * 50)
    return {"png": png, "jpg": jpg, "video": video, "bad": bad, "bad_video": bad_video}


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_for_png_jpeg_and_video_with_drawings(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    draw = tmp_path / "drawn"
    files = [str(inputs[k]) for k in ("png", "jpg", "video")]
    assert main(["detect", *files, "--json", "--draw", str(draw)]) == 0
    results = _lines(capsys.readouterr().out)
    assert [r["file"] for r in results] == [files[0], files[1], files[2], files[2], files[2]]
    assert "pts" not in results[0] and "pts" not in results[1]
    assert [r["pts"] for r in results[2:]] == [0.0, 1.0, 2.0]
    for r in results:
        assert (r["width"], r["height"]) == (768, 576)
        dets = r["detections"]
        assert isinstance(dets, list)
        kinds = [d["type"] for d in dets]
        assert kinds.count("Body") >= 3, r
        assert "Motor" in kinds, r  # the van and the car parked at the top right
        for d in dets:
            assert set(d) == {"type", "box", "score", "attributes"}
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
            assert 0 < d["score"] <= 1
            if d["type"] == "Motor":
                assert d["attributes"]["VehicleClass"] in {"car", "motorcycle", "bus", "truck"}
            if d["type"] == "Body":
                assert d["attributes"] == {"CocoClass": "person"}
        scores = [d["score"] for d in dets]
        assert scores == sorted(scores, reverse=True)
    drawn = sorted(p.name for p in draw.iterdir())
    assert drawn == [
        "street.jpg.png",
        "street.png.png",
        "walk.mkv_0000.000s.png",
        "walk.mkv_0001.000s.png",
        "walk.mkv_0002.000s.png",
    ]
    image = cv2.imread(str(draw / "walk.mkv_0001.000s.png"))
    assert image is not None and image.shape == (576, 768, 3)
    # the boxes are painted: the drawing differs from the frame where a box is
    assert np.any(image != cv2.imread(str(inputs["png"])))


def test_algorithm_picks_the_types_and_bad_files_are_counted(
    inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(inputs["bad"]), str(inputs["png"]), "/nonexistent/x.png", str(inputs["bad_video"])]
    assert main(["detect", *files, "--json", "--algorithm", "vehicle"]) == 1
    captured = capsys.readouterr()
    (only,) = _lines(captured.out)  # the good file still ran
    assert only["file"] == str(inputs["png"])
    assert {d["type"] for d in only["detections"]} == {"Motor"}  # type: ignore[union-attr]
    assert "notes.jpg: not a picture" in captured.err
    assert "/nonexistent/x.png: no such file" in captured.err
    assert "broken.mkv: neither a picture nor a video" in captured.err
    assert "3 of 4 file(s) failed" in captured.err


def test_human_table_and_site_file(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: {name: t, timezone: UTC}\n"
        f'agent: {{data_dir: "{tmp_path / "data"}"}}\n'
        "detection:\n  body: {model: ssdlite-person}\n"
    )
    assert main(["detect", str(inputs["png"]), "--algorithm", "body", "-c", str(site)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{inputs['png']}  768x576  ") and out[0].endswith(" found")
    rows = out[1:]
    assert rows and all(r.split()[0] == "Body" for r in rows)
    assert not any("CocoClass" in r for r in rows)  # SSDLite: no COCO attributes
