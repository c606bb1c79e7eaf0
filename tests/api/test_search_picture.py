"""SearchTarget by picture through the official SDK (``alibabacloud-vcs20200515``) against a running agent.

Stored targets are real: the agent's own models (RetinaFace + SFace) detect and embed the faces of real pictures
the packages ship (opencv-doc's basketball1.png, messi5.jpg, the insightface group photo t1.jpg), stored with
the store's add path. The query is a different photo of one of them: basketball2.png, another frame of the same
game, where the player at the left is found again (cosine 0.86 with the stored face; every stranger stays under
0.55). Also: a picture by URL from a server on loopback (the allow-list's networks), the largest of several
faces, paging, filters, and errors that name their parameter.
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from alibabacloud_vcs20200515 import models as m

from agent import samples
from agent.analytics.targets import TargetRecord, make_target_id

from .conftest import SITE_IPC, Agent, make_agent, sdk_client
from .test_media_search import err

T0 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
PICTURES = ("basketball1.png", "messi5.jpg", "t1.jpg")


def _picture(name: str) -> Path:
    return samples.group_photo() if name == "t1.jpg" else samples.opencv_image(name)


def _store_faces(agent: Agent) -> dict[str, list[str]]:
    """Detect and embed every face of PICTURES with the agent's models; store each as a target. Returns
    each picture's faces by Timestamp."""
    assert agent.sup is not None and agent.store is not None
    models = agent.sup.analytics.models
    ids: dict[str, list[str]] = {}
    n = 0
    for dev, name in enumerate(PICTURES):
        image = cv2.imread(str(_picture(name)))
        assert image is not None
        for face in models.face.detect(image):
            assert face.landmarks is not None
            ts = T0 + timedelta(minutes=n)
            rec = TargetRecord(
                target_id=make_target_id(f"dev{dev}", "Face", ts, n, "pictures"),
                target_type="Face",
                timestamp=ts,
                device_id=SITE_IPC if dev == 0 else f"3402000000132000000{dev + 1}",
                left_top_x=int(face.x1),
                left_top_y=int(face.y1),
                right_bottom_x=int(face.x2),
                right_bottom_y=int(face.y2),
                score=float(face.score),
                corp_id="site-project",
                instance_id="pictures",
                algorithm_id="face",
                algorithm_name="faces",
                embedding=models.embedder.embed(image, face.landmarks),
            )
            x1, y1 = max(0, int(face.x1)), max(0, int(face.y1))
            ok, crop = cv2.imencode(".jpg", image[y1 : int(face.y2), x1 : int(face.x2)])
            assert ok and agent.store.add(rec, crop.tobytes())
            # the SDK's record has no TargetId: a stored face is known by its Timestamp (one a minute)
            ids.setdefault(name, []).append(ts.strftime("%Y-%m-%dT%H:%M:%SZ"))
            n += 1
    return ids


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, dict[str, list[str]]]]:
    a = make_agent(tmp_path_factory.mktemp("picture-search"))
    try:
        yield a, _store_faces(a)
    finally:
        a.close()


def _search(agent: Agent, **kw: Any) -> Any:
    kw.setdefault("corp_id", "site-project")
    kw.setdefault("target_type", "Face")
    kw.setdefault("page_number", 1)
    kw.setdefault("page_size", 10)
    return sdk_client(agent).search_target(m.SearchTargetRequest(**kw)).body


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _left_player() -> str:
    """basketball2.png's left part (the player at x 71, y 92), as PNG base64."""
    image = cv2.imread(str(samples.opencv_image("basketball2.png")))
    assert image is not None
    ok, png = cv2.imencode(".png", image[:300, :250])
    assert ok
    return base64.b64encode(png.tobytes()).decode()


def test_a_different_photo_finds_the_same_person_and_no_stranger(stored: Any) -> None:
    agent, ids = stored
    assert len(ids["basketball1.png"]) >= 2 and len(ids["t1.jpg"]) == 6
    other_photo = _left_player()
    body = _search(agent, target_image_data=other_photo, similarity_threshold=0.6)
    assert body.success and body.message == "OK"  # one face in the query picture
    records = body.data.records
    assert len(records) == 1 and records[0].timestamp in ids["basketball1.png"], [
        (r.timestamp, r.target_image_similarity) for r in records
    ]
    player = records[0].timestamp
    assert records[0].target_image_similarity >= 0.8 and body.data.total_count == 1
    # with no threshold every stored face comes, best first (the whole stored history is searched)
    every = _search(agent, target_image_data=other_photo, page_size=100).data
    sims = [r.target_image_similarity for r in every.records]
    assert every.total_count == sum(len(v) for v in ids.values()) and sims == sorted(sims, reverse=True)
    assert every.records[0].timestamp == player and sims[1] < 0.6
    # paging keeps the order
    second = _search(agent, target_image_data=other_photo, page_size=4, page_number=2).data
    assert [r.timestamp for r in second.records] == [r.timestamp for r in every.records[4:8]]
    # filters apply with the picture: only the camera of the group photo
    group_dev = "34020000001320000003"
    only = _search(agent, target_image_data=other_photo, device_list=f'["{group_dev}"]', page_size=100)
    assert only.data.total_count == 6 and all(r.device_id == group_dev for r in only.data.records)
    window = _search(
        agent,
        target_image_data=other_photo,
        begin_time="2024-06-01T09:00:00Z",
        end_time="2024-06-01T09:02:00Z",
        page_size=100,
    ).data
    assert window.total_count == 3  # the faces stored at minutes 0, 1 and 2


def test_several_faces_use_the_largest_and_say_so(stored: Any) -> None:
    agent, ids = stored
    body = _search(agent, target_image_data=_b64(samples.group_photo()), similarity_threshold=0.9)
    assert "6 faces" in body.message and "largest" in body.message
    assert len(body.data.records) == 1 and body.data.records[0].timestamp in ids["t1.jpg"]
    assert body.data.records[0].target_image_similarity > 0.95  # the stored face of that very photo


class _Pictures(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def picture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("served")
    (root / "bb2.png").write_bytes(samples.opencv_image("basketball2.png").read_bytes())
    (root / "big.bin").write_bytes(b"\x89PNG" + bytes(600 * 1024))
    (root / "fruits.jpg").write_bytes(samples.opencv_image("fruits.jpg").read_bytes())

    def handler(*a: Any, **kw: Any) -> _Pictures:
        return _Pictures(*a, directory=str(root), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_picture_by_url_and_errors_name_their_parameter(stored: Any, picture_server: str) -> None:
    agent, ids = stored
    body = _search(agent, target_image_url=f"{picture_server}/bb2.png", similarity_threshold=0.6)
    assert len(body.data.records) == 1 and body.data.records[0].timestamp in ids["basketball1.png"]

    def refused(**kw: Any) -> Any:
        e = err(lambda: _search(agent, **kw))
        assert e.code == "InvalidParameter", e
        return e.message

    assert "TargetImageUrl" in refused(target_image_url=f"{picture_server}/missing.png")
    assert "HTTP 404" in refused(target_image_url=f"{picture_server}/missing.png")
    assert "at most 512000" in refused(target_image_url=f"{picture_server}/big.bin")
    msg = refused(target_image_url="ftp://127.0.0.1/x.png")
    assert "TargetImageUrl" in msg and "http, https" in msg
    msg = refused(target_image_url="http://169.254.169.254/latest/meta-data")
    assert "TargetImageUrl" in msg and "allowed_source_networks" in msg
    assert "TargetImageUrl" in refused(target_image_url="http://127.0.0.1/" + "a" * 1100)
    msg = refused(target_image_url=f"{picture_server}/fruits.jpg")
    assert "TargetImageUrl" in msg and "no Face found" in msg
    msg = refused(target_image_data=_b64(samples.opencv_image("fruits.jpg")))
    assert "TargetImageData" in msg and "no Face found" in msg
    msg = refused(target_image_data="not base64!")
    assert "TargetImageData" in msg and "base64" in msg
    msg = refused(target_image_data=base64.b64encode(np.zeros(600 * 1024, np.uint8).tobytes()).decode())
    assert "TargetImageData" in msg
    picture = _b64(samples.opencv_image("basketball2.png"))
    assert "SimilarityThreshold" in refused(target_image_data=picture, similarity_threshold=1.5)
    msg = refused(target_image_data=picture, target_type="Motor")
    assert "TargetImageData" in msg and "Face" in msg
    msg = refused(target_image_data=picture, target_image_url=f"{picture_server}/bb2.png")
    assert "not both" in msg
