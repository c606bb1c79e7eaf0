"""Search by picture in the browser, with the box's real face detector and embedder (SFace) loaded: a face
stored with the embedding of a real photo is found by uploading that photo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import samples
from agent.console.auth import hash_password

from .conftest import CAM, PASSWORD, USER, Box, shot

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def model_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    tmp = tmp_path_factory.mktemp("console-search")
    site = tmp / "site.yaml"
    site.write_text(
        f"""
site: {{name: console-search, project_id: site-project}}
agent:
  data_dir: {tmp / "data"}
  http: {{host: 127.0.0.1, port: 0}}
devices:
  - id: "{CAM}"
    name: gate camera
    stream: {{main: "rtsp://127.0.0.1:9/none", mode: 0}}
console:
  users: [{{name: {USER}, password_hash: "{hash_password(PASSWORD, n=2**12)}"}}]
"""
    )
    b = Box(site, models=True).start()
    try:
        yield b
    finally:
        b.close()


def test_a_stored_face_is_found_by_its_picture(browser: Any, model_box: Box) -> None:
    try:
        photo = samples.group_photo()
    except samples.SampleUnavailable as exc:
        pytest.skip(str(exc))
    raw = Path(photo).read_bytes()
    assert model_box.sup.embedder is not None
    emb = model_box.sup.embedder(raw, "Face").vector  # a QueryVector: the largest face's
    assert emb is not None
    tid = model_box.add_target("Face", embedding=emb)
    model_box.add_target("Body")  # not a face: never a result
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
    page = ctx.new_page()
    try:
        page.goto(model_box.url + "/console/login")
        page.fill("input[name=user]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(model_box.url + "/console/")
        page.goto(model_box.url + "/console/search")
        page.set_input_files("#picture", str(photo))
        page.click("#search-go")
        page.wait_for_selector("#results")
        found = [page.locator("#results .target").nth(i).get_attribute("data-target") for i in range(
            page.locator("#results .target").count())]  # fmt: skip
        assert found == [tid]
        shot(page, "search")
        # a file that is no picture gets the reason, not a crash
        bad = Path(model_box.sup.site.agent.data_dir) / "not-a-picture.jpg"
        bad.write_bytes(b"this is text")
        page.set_input_files("#picture", str(bad))
        page.click("#search-go")
        assert "Not a picture" in page.locator("#error").inner_text()
    finally:
        ctx.close()
