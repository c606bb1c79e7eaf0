"""The analytics stage inside a running supervisor: a camera showing the group photo (six faces), a ``face``
instance, the real RetinaFace + SFace models and the SQLite store. Each face becomes one target with its crop, its
source frame and a 128-d embedding; tracks still open when the agent stops are stored, not lost.

The camera is a file source played in real time (H.264 made from the photo with PyAV), so no server is needed.
"""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from agent import samples
from agent.box.supervisor import Supervisor
from agent.config import load_text
from agent.storage.store import TargetStore

CAM = "34020000001320000009"


def photo_clip(path: Path, seconds: int = 6, fps: int = 5) -> Path:
    image = cv2.imread(str(samples.group_photo()))
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    image = np.ascontiguousarray(image[:h, :w])
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"g": str(fps), "bf": "0"}
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_six_faces_become_six_targets_with_embeddings(tmp_path: Path) -> None:
    clip = photo_clip(tmp_path / "group.mkv")
    site = load_text(
        f"""
site: {{name: faces, timezone: UTC}}
agent: {{data_dir: "{tmp_path / "data"}", http: {{host: 127.0.0.1, port: 0}}}}
streams: {{mode: 1}}
devices:
  - {{id: "{CAM}", name: photo, frame_rate: 5, gop: 5, stream: {{main: "{clip}"}}}}
detection:
  body: {{enabled: false}}
  track_max_missed_s: 30
instances:
  - {{id: faces, name: faces, algorithm_id: face, spf: 1, cameras: ["{CAM}"]}}
""",
        "faces.yaml",
        {},
    )

    async def run() -> None:
        sup = Supervisor(site=site)
        await sup.start()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if sup.analytics is not None and sup.analytics.frames_in >= 3:
                break
        await sup.stop()  # the six tracks are still open: stopping must store them

    asyncio.run(run())
    store = TargetStore(site.agent.data_dir, sinks=())  # what the stopped agent left on disk
    page = store.search(target_type="Face", page_size=50)
    assert page.total_count == 6
    for hit in page.hits:
        r = hit.record
        assert r.device_id == CAM and r.instance_id == "faces" and r.algorithm_id == "face"
        assert r.embedding is not None and r.embedding.shape == (128,)
        assert abs(float(np.linalg.norm(r.embedding)) - 1.0) < 1e-3
        assert r.landmarks is not None and len(r.landmarks) == 5
        crop = (store.media_root / r.target_image_path).read_bytes()
        assert crop[:3] == b"\xff\xd8\xff"
        assert r.source_image_path
    # six different people: no two embeddings are the same person
    embs = np.stack([h.record.embedding for h in page.hits if h.record.embedding is not None])
    sims = embs @ embs.T
    assert float(np.max(sims - np.eye(6) * 2)) < 0.5
    assert store.search(target_type="Body", page_size=10).total_count == 0
    store.close()


def test_face_body_records_carry_attributes_and_the_body_of_each_face(tmp_path: Path) -> None:
    clip = photo_clip(tmp_path / "group.mkv")
    site = load_text(
        f"""
site: {{name: faces, timezone: UTC}}
agent: {{data_dir: "{tmp_path / "data"}", http: {{host: 127.0.0.1, port: 0}}}}
streams: {{mode: 1}}
devices:
  - {{id: "{CAM}", name: photo, frame_rate: 5, gop: 5, stream: {{main: "{clip}"}}}}
detection:
  face: {{embed: false}}
  track_max_missed_s: 30
instances:
  - {{id: both, name: both, algorithm_id: face_body, spf: 1, cameras: ["{CAM}"]}}
""",
        "both.yaml",
        {},
    )

    async def run() -> None:
        sup = Supervisor(site=site)
        await sup.start()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if sup.analytics is not None and sup.analytics.frames_detected >= 3:
                break
        await sup.stop()

    asyncio.run(run())
    store = TargetStore(site.agent.data_dir, sinks=())
    faces = [h.record for h in store.search(target_type="Face", page_size=50).hits]
    bodies = {h.record.target_id: h.record for h in store.search(target_type="Body", page_size=50).hits}
    assert len(faces) == 6 and bodies
    for r in faces:
        keys = {a.key for a in r.attributes}
        assert {"GenderCode", "Age"} <= keys
        api = json.loads(r.to_api()["TargetAttributes"])
        assert any(
            a["Key"] == "GenderCode" and a["Value"] in ("1", "2") and 0.5 <= a["Score"] <= 1 for a in api
        )
    assert (
        sorted(a.value for r in faces for a in r.attributes if a.key == "GenderCode") == ["1"] * 3 + ["2"] * 3
    )
    for r in bodies.values():
        colours = {a.key: a.value for a in r.attributes}
        assert {"UpperColor", "LowerColor"} <= set(colours)  # plus the COCO model's own CocoClass
    linked = [a.value for r in faces for a in r.attributes if a.key == "BodyTargetId"]
    assert len(linked) >= 4
    assert set(linked) <= set(bodies)  # each names a Body record that was stored
    store.close()
