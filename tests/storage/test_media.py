"""Media links over real HTTP: a real aiohttp server on loopback and a real aiohttp client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from agent.storage.links import LinkMaker, LinkSigner, MediaServer, load_or_create_key
from agent.storage.store import TargetStore
from tests.storage.conftest import T0, Jpegs, make_record


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Site:
    def __init__(self, store: TargetStore, server: MediaServer, links: LinkMaker, clock: Clock) -> None:
        self.store = store
        self.server = server
        self.links = links
        self.clock = clock


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[Site]:
    """The media route of a real aiohttp server on 127.0.0.1 (free port), stopped on exit."""
    clock = Clock()
    signer = LinkSigner(load_or_create_key(tmp_path), clock=clock)
    store = TargetStore(tmp_path, sinks=())
    server = MediaServer(store.media_root, signer)
    app = web.Application()
    app.router.add_routes([server.route()])
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    links = LinkMaker(signer, lambda: f"http://127.0.0.1:{port}", ttl_s=600)
    try:
        yield Site(store, server, links, clock)
    finally:
        await runner.cleanup()
        store.close()


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?" + "&".join(f"{k}={v}" for k, v in q.items())


async def _get(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


def test_record_urls_serve_the_jpegs(tmp_path: Path, jpegs: Jpegs) -> None:
    asyncio.run(_record_urls_serve_the_jpegs(tmp_path, jpegs))


async def _record_urls_serve_the_jpegs(tmp_path: Path, jpegs: Jpegs) -> None:
    async with serving(tmp_path) as site:
        rec = make_record("34020000001320000001", 1)
        await asyncio.to_thread(site.store.add, rec, jpegs.crop, jpegs.frame)
        api = rec.to_api(site.links.media_url)
        status, body, ctype = await _get(str(api["TargetImageUrl"]))
        assert (status, body, ctype) == (200, jpegs.crop, "image/jpeg")
        status, body, _ = await _get(str(api["SourceImageUrl"]))
        assert (status, body) == (200, jpegs.frame)
        assert site.server.served == 2


def test_tampered_and_expired_links_are_refused(tmp_path: Path, jpegs: Jpegs) -> None:
    asyncio.run(_tampered_and_expired_links_are_refused(tmp_path, jpegs))


async def _tampered_and_expired_links_are_refused(tmp_path: Path, jpegs: Jpegs) -> None:
    async with serving(tmp_path) as site:
        a, b = make_record("cam", 1), make_record("cam", 2)
        await asyncio.to_thread(site.store.add, a, jpegs.crop, jpegs.frame)
        await asyncio.to_thread(site.store.add, b, jpegs.crop, jpegs.frame)
        url_a = site.links.media_url(a.target_image_path)
        url_b = site.links.media_url(b.target_image_path)
        sig = parse_qs(urlsplit(url_a).query)["s"][0]
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        assert (await _get(_with_query(url_a, s=flipped)))[0] == 403  # signature changed
        exp = int(parse_qs(urlsplit(url_a).query)["e"][0])
        assert (await _get(_with_query(url_a, e=str(exp + 3600))))[0] == 403  # expiry extended
        # a's signature on b's path
        assert (await _get(_with_query(url_b, s=sig, e=str(exp))))[0] == 403
        assert (await _get(url_a.split("?")[0]))[0] == 403  # no signature at all
        site.clock.now += 601  # past the 600 s lifetime
        assert (await _get(url_a))[0] == 403
        assert site.server.refused == 5 and site.server.served == 0


def test_paths_outside_the_media_root_are_refused(tmp_path: Path, jpegs: Jpegs) -> None:
    asyncio.run(_paths_outside_the_media_root_are_refused(tmp_path, jpegs))


async def _raw_get(host_port: str, target: str) -> tuple[int, bytes]:
    """A GET with the request target sent verbatim (HTTP clients would normalise ``..`` away)."""
    host, port = host_port.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), data


async def _paths_outside_the_media_root_are_refused(tmp_path: Path, jpegs: Jpegs) -> None:
    async with serving(tmp_path) as site:
        assert (tmp_path / "targets.db").exists()
        host_port = urlsplit(site.links.base()).netloc
        for path in (
            "../targets.db",
            "2024/../../targets.db",
            "%2e%2e/targets.db",
            "..%2ftargets.db",
            "//etc/passwd",
        ):
            q = site.links.signer.sign("media", "targets.db", 60)  # a valid signature, for the plain name
            status, raw = await _raw_get(host_port, f"/media/{path}?{q}")
            assert status in (403, 404), path
            assert b"SQLite format" not in raw
        # A symlink planted in the media root with a correctly signed link still cannot leave the root.
        (site.store.media_root / "evil.jpg").symlink_to(tmp_path / "targets.db")
        status, raw = await _raw_get(
            host_port, f"/media/evil.jpg?{site.links.signer.sign('media', 'evil.jpg', 60)}"
        )
        assert status == 403 and b"SQLite format" not in raw
        with pytest.raises(ValueError, match="relative path"):
            site.links.signer.sign("media", "../targets.db", 60)


def test_removed_media_is_404_not_500(tmp_path: Path, jpegs: Jpegs) -> None:
    asyncio.run(_removed_media_is_404_not_500(tmp_path, jpegs))


async def _removed_media_is_404_not_500(tmp_path: Path, jpegs: Jpegs) -> None:
    async with serving(tmp_path) as site:
        rec = make_record("cam", 1)
        await asyncio.to_thread(site.store.add, rec, jpegs.crop, jpegs.frame)
        url = site.links.media_url(rec.target_image_path)
        await asyncio.to_thread(site.store.apply_retention, T0 + timedelta(days=5), None, 1)
        assert (await _get(url))[0] == 404
        assert site.server.missing == 1


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "media.key").st_mode)
    assert mode == 0o600 and len(key) == 32
    assert load_or_create_key(tmp_path) == key
    (tmp_path / "media.key").write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 16"):
        load_or_create_key(tmp_path)
