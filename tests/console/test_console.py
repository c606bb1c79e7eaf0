"""The console in a real browser (Debian's chromium through Playwright) against a running agent with a real
RTSP camera: login, live view over WebRTC (H.264 passed through) and HLS, the gallery updating by itself,
filters, paging, a target's source frame, and the refusals (no session, bad CSRF, too many logins).

Screenshots of each page go to $VCS_EDGE_SHOTS (default: <tmp>/vcs-edge-console-shots)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from .conftest import CAM, OTHER, PASSWORD, USER, Box, shot

pytestmark = pytest.mark.peer


def _status(
    url: str, *, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None
) -> int:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def login(page: Any, box: Box, password: str = PASSWORD) -> None:
    page.goto(box.url + "/console/login")
    page.fill("input[name=user]", USER)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


@pytest.fixture
def page(browser: Any, box: Box) -> Any:
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the console's CSP forbids (as it should)
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US", bypass_csp=True)
    p = ctx.new_page()
    yield p
    ctx.close()


def test_nothing_without_a_session(box: Box) -> None:
    base = box.url
    # a page asks the browser to log in; anything else of the console is 401
    assert _status(base + "/console/", headers={"Accept": "text/html"}) == 302
    for path in ("/console/", "/console/targets", "/console/events", "/console/config", f"/console/thumb/{CAM}.jpg",
                 "/console/media/x.jpg", "/console/static/console.js", f"/console/api/live/{CAM}"):  # fmt: skip
        assert _status(base + path) == 401, path
    assert _status(base + f"/console/webrtc/{CAM}", method="POST", data=b"v=0") == 401
    assert _status(base + "/console/login") == 200
    # the login form itself wants its CSRF token
    assert _status(base + "/console/login", method="POST", data=b"user=a&password=b",
                   headers={"Content-Type": "application/x-www-form-urlencoded"}) == 403  # fmt: skip
    assert box.call(lambda: box.console.unauthenticated) >= 9


def test_login_and_bad_csrf_refused(page: Any, box: Box) -> None:
    login(page, box, password="wrong-password")
    assert page.locator("#error").is_visible()
    login(page, box)
    page.wait_for_url(box.url + "/console/")
    cookie = next(c for c in page.context.cookies() if c["name"] == "vcs_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # with a session, a POST with a wrong CSRF token is refused, with the right one it passes the check
    res = page.evaluate(
        """async (cam) => {
            const bad = await fetch('/console/webrtc/' + cam, {method: 'POST', body: 'v=0',
                headers: {'X-CSRF-Token': 'forged'}});
            const none = await fetch('/console/logout', {method: 'POST'});
            const token = document.querySelector('meta[name=csrf]').content;
            const good = await fetch('/console/webrtc/' + cam, {method: 'POST', body: 'v=0',
                headers: {'X-CSRF-Token': token}});
            return [bad.status, none.status, good.status];
        }""",
        CAM,
    )
    assert res[0] == 403 and res[1] == 403 and res[2] == 400  # 400: "v=0" is no offer, but it got through
    page.goto(box.url + "/console/")
    assert page.locator("#cameras .camera").count() == 2  # still logged in: the forged logout did nothing


def test_pages_and_screenshots(page: Any, box: Box) -> None:
    login(page, box)
    page.wait_for_url(box.url + "/console/")
    page.wait_for_function("document.querySelector('img[data-thumb]').naturalWidth > 0", timeout=20000)
    assert page.locator(f'[data-camera="{CAM}"] [data-status]').inner_text() == "streaming"
    shot(page, "overview")
    # stream status is pushed: the yard camera (nothing listens on its port) goes connecting -> backoff again and
    # again; each change rewrites its badge without a reload
    badge = f'[data-camera="{OTHER}"] [data-status]'
    page.evaluate(f"document.querySelector('{badge}').textContent = '?'")
    page.wait_for_function(
        f"['connecting', 'backoff'].includes(document.querySelector('{badge}').textContent)", timeout=15000
    )
    page.goto(box.url + "/console/instances")
    assert page.locator(".instance .on").count() == 2  # two windows on one weekday
    shot(page, "instances")
    page.goto(box.url + "/console/config")
    text = page.locator("#config").inner_text()
    assert "0123456789abcdef" not in text and "scrypt$" not in text and '"***"' in text
    shot(page, "config")
    page.goto(box.url + "/console/watch")  # read-only lists (made through the API); none on this box yet
    assert page.locator("#policies").count() == 1 and page.locator("#tasks").count() == 1
    page.goto(box.url + "/console/search")  # this box loaded no embedding model (no detection here)
    assert "embedding model" in page.locator("#unavailable").inner_text()
    # the search form is multipart: its CSRF token is checked there too
    status = page.evaluate(
        """async () => {
            const f = new FormData(); f.append('type', 'Face');
            f.append('picture', new Blob([new Uint8Array([1, 2, 3])]), 'x.jpg');
            const bad = await fetch('/console/search', {method: 'POST', body: f});
            f.append('csrf', document.querySelector('meta[name=csrf]').content);
            const good = await fetch('/console/search', {method: 'POST', body: f});
            return [bad.status, good.status];
        }"""
    )
    assert status == [403, 200]
    page.click("#lang")  # the switch: Chinese
    page.wait_for_load_state()
    assert "布控名单" in page.locator("header").inner_text()
    page.goto(box.url + "/console/")
    shot(page, "overview-zh")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    shot(page, "overview-phone")
    page.goto(box.url + "/console/?lang=en")


def test_webrtc_live_view_plays_h264_passed_through(page: Any, box: Box) -> None:
    login(page, box)
    page.wait_for_url(box.url + "/console/")
    # the overview's live thumbnails are snapshots (one decoded frame each): let them finish first, so that
    # what is counted below is the live path alone
    page.wait_for_function("[...document.images].every((i) => i.complete)", timeout=30000)
    page.goto(box.url + f"/console/camera/{CAM}")
    manager = box.sup.streams.manager
    decoded_before = box.call(lambda: manager.stats(CAM).frames_decoded)
    page.wait_for_function("document.getElementById('live').dataset.mode === 'webrtc'", timeout=30000)
    t0 = page.evaluate("document.getElementById('live').currentTime")
    page.wait_for_function(f"document.getElementById('live').currentTime > {t0} + 1.0", timeout=20000)
    size = page.evaluate(
        "[document.getElementById('live').videoWidth, document.getElementById('live').videoHeight]"
    )
    stats = page.evaluate(
        """async () => {
            const out = {};
            (await window.livePc.getStats()).forEach((r) => {
                if (r.type === 'inbound-rtp' && r.kind === 'video') Object.assign(out, {
                    w: r.frameWidth, h: r.frameHeight, decoded: r.framesDecoded, codecId: r.codecId});
                if (r.type === 'codec') out['codec:' + r.id] = r.mimeType;
            });
            out.codec = out['codec:' + out.codecId];
            return out;
        }"""
    )
    cam_stats = box.call(lambda: manager.stats(CAM))
    assert size == [cam_stats.width, cam_stats.height] and size[0] > 0
    assert stats["codec"] == "video/H264" and (stats["w"], stats["h"]) == (cam_stats.width, cam_stats.height)
    assert stats["decoded"] > 10
    rtc = box.call(box.sup.webrtc.stats)
    assert rtc["viewers"] >= 1 and rtc["encoders_opened"] == 0 and rtc["packets_sent"] > 10
    assert box.call(lambda: manager.stats(CAM).frames_decoded) == decoded_before  # nothing decoded at the box
    shot(page, "camera")
    page.goto(box.url + "/console/targets")  # leaving the page ends the viewer (WHEP DELETE on pagehide)
    assert _wait(lambda: box.call(lambda: box.sup.webrtc.stats()["viewers"]) == 0, 20)


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


def test_hls_fallback_plays(page: Any, box: Box) -> None:
    login(page, box)
    page.wait_for_url(box.url + "/console/")
    page.goto(box.url + f"/console/camera/{CAM}?live=hls")
    page.wait_for_function("document.getElementById('live').dataset.mode === 'hls'", timeout=60000)
    page.wait_for_function("document.getElementById('live').videoWidth > 0", timeout=30000)
    t0 = page.evaluate("document.getElementById('live').currentTime")
    page.wait_for_function(f"document.getElementById('live').currentTime > {t0} + 1.0", timeout=30000)


def test_gallery_updates_filters_pages_and_opens_a_target(page: Any, box: Box) -> None:
    for i in range(26):
        box.add_target("Body", colour="red" if i % 2 else "blue")
    for _ in range(3):
        box.add_target("Face")
    login(page, box)
    page.wait_for_url(box.url + "/console/")
    page.goto(box.url + "/console/targets")
    assert page.locator("#gallery .target").count() == 24
    total = int(page.locator("#total").inner_text())
    assert total >= 29
    # a new target shows up while the page is open
    t0 = time.monotonic()
    tid = box.add_target("Body", colour="green")
    page.wait_for_selector(f'#gallery [data-target="{tid}"]', timeout=5000)
    appeared_s = time.monotonic() - t0
    assert int(page.locator("#total").inner_text()) == total + 1
    print(json.dumps({"target_to_gallery_s": round(appeared_s, 3)}))
    assert appeared_s < 1.0
    shot(page, "targets")
    # paging
    page.click("#next")
    page.wait_for_url("**page=2")
    assert page.locator("#page").inner_text() == "2"
    assert 1 <= page.locator("#gallery .target").count() <= 24
    # filter
    page.select_option("#f-type", "Face")
    page.click("#f-go")
    page.wait_for_url("**type=Face**")
    assert int(page.locator("#total").inner_text()) == 3
    assert page.locator("#gallery .target").count() == 3
    # open one: its source frame with the box drawn over it
    page.click("#gallery .target >> nth=0")
    page.wait_for_selector("#frame")
    page.wait_for_function("document.getElementById('frame').naturalWidth > 0")
    box_style = page.locator("#box").get_attribute("style") or ""
    assert "left:31.250%" in box_style and "width:18.750%" in box_style  # 100..160 of 320 px
    shot(page, "target")


def test_a_reload_brings_new_users_and_keeps_the_console(page: Any, box: Box) -> None:
    from agent.console.auth import hash_password

    text = box.site_path.read_text()
    added = f'{{name: {USER}, password_hash: "{hash_password("second-pass-1", n=2**12)}"}}'
    box.site_path.write_text(
        text.replace(
            "  users: [{name: " + USER, "  users: [" + added.replace(USER, "second") + ", {name: " + USER, 1
        )
    )
    assert box.run(box.sup.reload())
    page.goto(box.url + "/console/login")
    page.fill("input[name=user]", "second")
    page.fill("input[name=password]", "second-pass-1")
    page.click("button[type=submit]")
    page.wait_for_url(box.url + "/console/")
    assert page.locator("header").inner_text().count("second") == 1


def test_login_is_rate_limited(page: Any, box: Box) -> None:
    """Last in the module: it blocks logins from 127.0.0.1 for a minute."""
    for _ in range(3):
        login(page, box, password="not-it")
        assert page.locator("#error").is_visible()
    login(page, box)  # the right password, but past the limit
    assert "Too many failed logins" in page.locator("#error").inner_text()
    assert box.call(lambda: box.console.limiter.limited) >= 1
