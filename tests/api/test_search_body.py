"""SearchTarget by picture for bodies, through the official SDK (``alibabacloud-vcs20200515``) against a running
agent.

The stored Body targets are made by the agent's own body detector (NanoDet) and detection pipeline (tracker,
best shot, appearance vector) on the hand-labelled 30 s of vtest.avi (``tests/api/bodies.py``), stored with
their real crops. The query is the crop of one sighting of a person at another moment than their target's best
shot, cut as target crops are; the box finds the body in it and compares appearance vectors
(:func:`pipelines.track.appearance_vector`, cosine = Bhattacharyya coefficient of the colour histograms).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from alibabacloud_vcs20200515 import models as m

from agent import samples

from .bodies import StoredBody, sighting_crop, store_bodies, who, whole_frame
from .conftest import SITE_IPC, Agent, make_agent, sdk_client
from .test_media_search import err

T0 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, list[StoredBody]]]:
    a = make_agent(tmp_path_factory.mktemp("body-search"))
    try:
        assert a.sup is not None and a.store is not None
        yield a, store_bodies(a.store, a.sup.analytics.models, SITE_IPC, T0)
    finally:
        a.close()


def _search(agent: Agent, picture: bytes, **kw: Any) -> Any:
    kw.setdefault("corp_id", "site-project")
    kw.setdefault("target_type", "Body")
    kw.setdefault("page_number", 1)
    kw.setdefault("page_size", 100)
    kw.setdefault("target_image_data", base64.b64encode(picture).decode())
    return sdk_client(agent).search_target(m.SearchTargetRequest(**kw)).body


def test_every_body_target_is_stored_with_its_appearance_vector(stored: Any) -> None:
    agent, made = stored
    assert len(made) >= 10  # 10 people walk through the clip
    assert len({b.person for b in made if b.person is not None}) >= 9  # best shots on labelled boxes
    for body in made:
        rec = agent.store.get(body.target_id)
        assert rec is not None and rec.embedding is not None and rec.embedding.shape == (72,)
        assert abs(float(np.linalg.norm(rec.embedding)) - 1.0) < 1e-4


@pytest.mark.parametrize(("person", "t"), [("P4", 25), ("P8", 19), ("P6", 22)])
def test_a_crop_of_one_sighting_finds_that_persons_target_first(stored: Any, person: str, t: int) -> None:
    agent, made = stored
    body = _search(agent, sighting_crop(person, t))
    assert body.success and body.message.startswith("OK")
    records = body.data.records
    sims = [r.target_image_similarity for r in records]
    # the whole stored history, ordered by similarity
    assert body.data.total_count == len(made) == len(records) and sims == sorted(sims, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in sims)
    ranked = [(who(made, r).person, s) for r, s in zip(records, sims, strict=True)]
    assert ranked[0][0] == person, ranked
    # the threshold cuts, paging keeps the order, other filters apply with the picture
    above = _search(agent, sighting_crop(person, t), similarity_threshold=0.8).data
    assert above.total_count == sum(1 for s in sims if s >= 0.8) >= 1
    assert all(r.target_image_similarity >= 0.8 for r in above.records)
    page = _search(agent, sighting_crop(person, t), page_size=4, page_number=2).data
    assert [r.timestamp for r in page.records] == [r.timestamp for r in records[4:8]]
    other = _search(agent, sighting_crop(person, t), device_list='["34020000001310000001"]').data
    assert other.total_count == 0


def test_several_bodies_use_the_largest_and_say_so(stored: Any) -> None:
    agent, made = stored
    body = _search(agent, whole_frame(20), page_size=1)
    assert "bodies" in body.message and "searched with the largest" in body.message, body.message
    assert len(body.data.records) == 1 and body.data.total_count == len(made)


def test_a_picture_with_no_body_is_refused_naming_the_parameter(stored: Any) -> None:
    agent, _ = stored
    e = err(lambda: _search(agent, samples.opencv_image("fruits.jpg").read_bytes()))
    assert e.code == "InvalidParameter" and "TargetImageData" in e.message and "no Body found" in e.message
    e = err(lambda: _search(agent, sighting_crop("P4", 25), target_type="Motor"))
    assert "TargetImageData" in e.message and "Face or Body" in e.message
