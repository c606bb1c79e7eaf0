"""Image databases (seed 003) through the official ``alibabacloud-imgsearch20200320`` SDK against a running agent,
with real pictures (opencv-doc, insightface) served by a static HTTP server on loopback (the box fetches
ImageUrl itself)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from alibabacloud_imgsearch20200320 import models as im
from alibabacloud_imgsearch20200320.client import Client as ImgClient
from alibabacloud_tea_openapi.models import Config

from agent import samples
from tests.peers import HlsServer

from .conftest import KEY_ID, SECRET, Agent

SCENES = ["basketball1.png", "board.jpg", "building.jpg", "fruits.jpg", "graf1.png", "messi5.jpg"]


def err(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HlsServer]:
    """The sample pictures, a changed copy of one, and pictures that break the limits, over HTTP on loopback."""
    folder = tmp_path_factory.mktemp("pics")
    for name in SCENES:
        shutil.copyfile(samples.opencv_image(name), folder / name)
    shutil.copyfile(samples.group_photo(), folder / "t1.jpg")  # 1280x886: a side over 1024
    fruits = cv2.imread(str(folder / "fruits.jpg"))
    h, w = fruits.shape[:2]
    copy = cv2.resize(fruits[int(h * 0.04) : int(h * 0.96), int(w * 0.04) : int(w * 0.96)], (400, 380))
    cv2.imwrite(str(folder / "fruits_copy.jpg"), copy, [cv2.IMWRITE_JPEG_QUALITY, 75])
    cv2.imwrite(str(folder / "tiny.png"), fruits[:100, :100])
    noise = np.random.default_rng(1).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "big.png"), noise)  # about 3 MB of incompressible PNG
    (folder / "not_a_picture.jpg").write_bytes(b"GIF89a this is not a JPEG")
    server = HlsServer(folder)
    try:
        yield server
    finally:
        server.stop()


def img_client(agent: Agent, secret: str = SECRET) -> Any:
    return ImgClient(
        Config(
            access_key_id=KEY_ID,
            access_key_secret=secret,
            endpoint=f"127.0.0.1:{agent.port}",
            protocol="http",
            region_id="cn-shanghai",
            read_timeout=60000,
            connect_timeout=5000,
        )
    )


def test_image_databases_end_to_end(agent: Agent, pictures: HlsServer) -> None:
    c = img_client(agent)
    c.create_image_db(im.CreateImageDbRequest(name="scenes"))
    c.create_image_db(im.CreateImageDbRequest(name="other_db"))
    assert [d.name for d in c.list_image_dbs().body.data.db_list] == ["scenes", "other_db"]
    ids = {}
    for i, name in enumerate(SCENES):
        body = c.add_image(
            im.AddImageRequest(
                db_name="scenes",
                entity_id=f"e{i}",
                extra_data=f"场景 {name}",
                image_url=pictures.url(name),
            )
        ).body
        ids[name] = body.data.data_id
    assert len(set(ids.values())) == len(SCENES)
    # a second picture of entity e3 (the same fruits), removed with it below
    c.add_image(
        im.AddImageRequest(
            db_name="scenes", entity_id="e3", extra_data="copy", image_url=pictures.url("fruits_copy.jpg")
        )
    )

    found = c.search_image(
        im.SearchImageRequest(db_name="scenes", image_url=pictures.url("fruits_copy.jpg"), limit=3)
    ).body.data.match_list
    assert len(found) == 3
    assert found[0].extra_data == "copy" and found[0].score > 9.9  # the very picture
    assert found[1].data_id == ids["fruits.jpg"] and found[1].entity_id == "e3" and found[1].score > 9.0
    assert found[1].image_url == pictures.url("fruits.jpg")
    assert found[2].score < 7.0  # another scene
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)

    # restart: databases, pictures and vectors are in data_dir
    agent.restart()
    c = img_client(agent)
    found = c.search_image(
        im.SearchImageRequest(db_name="scenes", image_url=pictures.url("messi5.jpg"), limit=1)
    ).body.data.match_list
    assert [(m.data_id, m.score) for m in found] == [(ids["messi5.jpg"], 10.0)]

    c.delete_image(im.DeleteImageRequest(db_name="scenes", entity_id="e3"))
    found = c.search_image(
        im.SearchImageRequest(db_name="scenes", image_url=pictures.url("fruits_copy.jpg"), limit=10)
    ).body.data.match_list
    assert "e3" not in {m.entity_id for m in found} and len(found) == len(SCENES) - 1
    assert max(m.score for m in found) < 7.0
    e = err(lambda: c.delete_image(im.DeleteImageRequest(db_name="scenes", entity_id="e3")))
    assert e.code == "InvalidParameter" and "EntityId" in e.message

    c.delete_image_db(im.DeleteImageDbRequest(name="scenes"))
    assert [d.name for d in c.list_image_dbs().body.data.db_list] == ["other_db"]
    e = err(lambda: c.list_images(im.ListImagesRequest(db_name="scenes")))
    assert e.code == "InvalidParameter" and "DbName" in e.message and "scenes" in e.message


def test_list_images_paging_and_token(agent: Agent, pictures: HlsServer) -> None:
    c = img_client(agent)
    c.create_image_db(im.CreateImageDbRequest(name="paging"))
    for i, name in enumerate(SCENES[:5]):
        c.add_image(
            im.AddImageRequest(
                db_name="paging", entity_id=f"u{i % 2}_{i}", extra_data=str(i), image_url=pictures.url(name)
            )
        )
    first = c.list_images(im.ListImagesRequest(db_name="paging", limit=2)).body.data
    assert first.total_count == 5 and [x.extra_data for x in first.image_list] == ["0", "1"] and first.token
    assert first.image_list[0].created_at > 1_600_000_000_000  # ms
    seen = [x.extra_data for x in first.image_list]
    token = first.token
    while token:
        page = c.list_images(im.ListImagesRequest(db_name="paging", limit=2, token=token)).body.data
        seen += [x.extra_data for x in page.image_list]
        token = page.token
    assert seen == ["0", "1", "2", "3", "4"]
    desc = c.list_images(im.ListImagesRequest(db_name="paging", limit=10, order="desc")).body.data
    assert [x.extra_data for x in desc.image_list] == ["4", "3", "2", "1", "0"] and desc.token == ""
    off = c.list_images(im.ListImagesRequest(db_name="paging", offset=3, limit=10)).body.data
    assert [x.extra_data for x in off.image_list] == ["3", "4"]
    pre = c.list_images(im.ListImagesRequest(db_name="paging", entity_id_prefix="u1")).body.data
    assert pre.total_count == 2 and {x.entity_id for x in pre.image_list} == {"u1_1", "u1_3"}
    e = err(lambda: c.list_images(im.ListImagesRequest(db_name="paging", offset=1990, limit=20)))
    assert "Offset" in e.message and "Token" in e.message
    e = err(lambda: c.list_images(im.ListImagesRequest(db_name="paging", limit=101)))
    assert "Limit" in e.message and "1..100" in e.message
    e = err(lambda: c.list_images(im.ListImagesRequest(db_name="paging", order="sideways")))
    assert "Order" in e.message
    e = err(lambda: c.list_images(im.ListImagesRequest(db_name="paging", token="abc")))
    assert "Token" in e.message


def test_names_limits_and_errors(agent: Agent, pictures: HlsServer) -> None:
    c = img_client(agent)
    for bad in ("A_upper", "x", "has-dash", "a" * 65, "中文"):
        e = err(lambda bad=bad: c.create_image_db(im.CreateImageDbRequest(name=bad)))
        assert e.code == "InvalidParameter" and "Name" in e.message, bad
    c.create_image_db(im.CreateImageDbRequest(name="limits"))
    e = err(lambda: c.create_image_db(im.CreateImageDbRequest(name="limits")))
    assert "Name" in e.message and "exists" in e.message

    def add(**kw: Any) -> Any:
        kw.setdefault("db_name", "limits")
        kw.setdefault("entity_id", "e1")
        kw.setdefault("extra_data", "x")
        kw.setdefault("image_url", pictures.url("board.jpg"))
        return c.add_image(im.AddImageRequest(**kw))

    cases = [
        ({"db_name": "missing_db"}, "DbName", "missing_db"),
        ({"entity_id": "Bad-Id"}, "EntityId", "lower-case"),
        ({"extra_data": "y" * 513}, "ExtraData", "at most 512"),
        ({"image_url": pictures.url("t1.jpg")}, "ImageUrl", "1280x886"),  # a side over 1024
        ({"image_url": pictures.url("tiny.png")}, "ImageUrl", "100x100"),  # a side under 128
        ({"image_url": pictures.url("big.png")}, "ImageUrl", "at most 2097152"),  # over 2 MB
        ({"image_url": pictures.url("not_a_picture.jpg")}, "ImageUrl", "JPEG, PNG"),
        ({"image_url": pictures.url("nothing_here.jpg")}, "ImageUrl", "HTTP 404"),
        ({"image_url": "ftp://127.0.0.1/x.jpg"}, "ImageUrl", "scheme"),
        ({"image_url": "http://127.0.0.1:22/x.jpg"}, "ImageUrl", "api.allowed_source_ports"),
        ({"image_url": "http://169.254.169.254/latest"}, "ImageUrl", "api.allowed_source_networks"),
        ({"image_url": pictures.url("图片.jpg")}, "ImageUrl", "non-ASCII"),
    ]
    for kw, name, text in cases:
        e = err(lambda kw=kw: add(**kw))
        assert e.code == "InvalidParameter", (kw, e)
        assert f"{name}:" in e.message and text in e.message, (kw, e.message)
    assert c.list_images(im.ListImagesRequest(db_name="limits")).body.data.total_count == 0
    # SearchImage allows 3 MB and Limit 1..1000
    e = err(
        lambda: c.search_image(
            im.SearchImageRequest(db_name="limits", image_url=pictures.url("board.jpg"), limit=0)
        )
    )
    assert "Limit" in e.message and "1..1000" in e.message
    assert (
        c.search_image(
            im.SearchImageRequest(db_name="limits", image_url=pictures.url("big.png"), limit=5)
        ).body.data.match_list
        == []
    )
    e = err(lambda: c.delete_image_db(im.DeleteImageDbRequest(name="nope_db")))
    assert "Name" in e.message and "nope_db" in e.message


def test_version_keeps_products_apart(agent: Agent) -> None:
    """The same listener and signer serve VCS and visual search; an action of one product is unknown in the
    other, with the one error shape."""
    from .conftest import sdk_client

    vcs = sdk_client(agent)
    from alibabacloud_vcs20200515 import models as vm

    assert vcs.list_corps(vm.ListCorpsRequest(page_number=1, page_size=5)).body.code == "200"
    from alibabacloud_tea_openapi.models import OpenApiRequest, Params
    from alibabacloud_tea_util.models import RuntimeOptions

    c = img_client(agent)
    params = Params(
        action="ListCorps",
        version="2020-03-20",
        protocol="HTTP",
        pathname="/",
        method="POST",
        auth_type="AK",
        style="RPC",
        req_body_type="formData",
        body_type="json",
    )
    e = err(
        lambda: c.call_api(params, OpenApiRequest(body={"PageNumber": 1, "PageSize": 5}), RuntimeOptions())
    )
    assert e.code == "InvalidAction.NotFound" and "visual search" in e.message and "2020-03-20" in e.message
    params.version = "2019-01-01"
    e = err(lambda: c.call_api(params, OpenApiRequest(body={}), RuntimeOptions()))
    assert e.code == "InvalidVersion" and "2018-01-20" in e.message


def test_v3_signature_refusals(agent: Agent) -> None:
    """The imgsearch SDK signs with ACS3-HMAC-SHA256: a wrong secret or an unknown key is refused with the
    codes of the RPC signature."""
    good = img_client(agent)
    good.create_image_db(im.CreateImageDbRequest(name="signed"))
    bad = img_client(agent, secret="wrong")
    e = err(lambda: bad.list_image_dbs())
    assert e.code == "SignatureDoesNotMatch" and "ACS3-HMAC-SHA256\n" in e.message
    stranger = ImgClient(
        Config(
            access_key_id="nobody",
            access_key_secret=SECRET,
            endpoint=f"127.0.0.1:{agent.port}",
            protocol="http",
            region_id="cn-shanghai",
        )
    )
    e = err(lambda: stranger.list_image_dbs())
    assert e.code == "InvalidAccessKeyId.NotFound" and "Credential" in e.message


def _v3_request(agent: Agent, action: str, body: bytes, *, sign_action: str | None = None) -> Any:
    """A raw ACS3-HMAC-SHA256 request made with the box's own signer (as the SDK makes it); ``sign_action``
    signs another action than the header sent."""
    import hashlib
    import urllib.error
    import urllib.request
    import uuid

    from agent.api import signature

    headers = {
        "host": f"127.0.0.1:{agent.port}",
        "x-acs-action": sign_action or action,
        "x-acs-version": "2020-03-20",
        "x-acs-date": signature.format_timestamp(),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        "content-type": "application/x-www-form-urlencoded",
    }
    signed = sorted(headers)
    canon = signature.v3_canonical_request(
        "POST", "/", {}, {k: [v] for k, v in headers.items()}, signed, headers["x-acs-content-sha256"]
    )
    sig = signature.v3_sign(signature.v3_string_to_sign(canon), SECRET)
    headers["x-acs-action"] = action
    headers["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={KEY_ID},SignedHeaders={';'.join(signed)},Signature={sig}"
    )
    req = urllib.request.Request(f"{agent.endpoint}/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_v3_signs_the_action_header_and_the_body(agent: Agent) -> None:
    import json

    c = img_client(agent)
    c.create_image_db(im.CreateImageDbRequest(name="keep_me"))
    status, _ = _v3_request(agent, "ListImageDbs", b"")
    assert status == 200
    # an action header other than the one signed (a listing turned into a deletion) is refused
    status, body = _v3_request(agent, "DeleteImageDb", b"Name=keep_me", sign_action="ListImageDbs")
    assert status == 400 and json.loads(body)["Code"] == "SignatureDoesNotMatch"
    assert [d.name for d in c.list_image_dbs().body.data.db_list] == ["keep_me"]
