"""The web console: ``/console/`` on the agent's HTTP listener (so it binds where ``agent.http`` binds).

Pages are rendered on the server (``pages``) from the box's ports: the registry and cameras (status pushed by
``Cameras.listeners``), the target store and the :class:`TargetBus`, the instances, the site file, and the
box's health (link state of GB/T 28181 and MQTT). Updates arrive without a reload over server-sent events
(``/console/events``): each stored target batch and each stream status change is pushed to every open page the
moment the bus or the camera listener fires.

Everything under ``/console/`` but the login page needs a session (``auth``); a page asked for without one is
redirected to the login, anything else gets 401. Every POST (login, logout, a WebRTC offer) must carry the
session's CSRF token (the login form a pre-session one, double-submitted in a cookie); a wrong one is 403.
Target crops, frames and thumbnails are served under ``/console/media`` and ``/console/thumb`` behind the same
session, never through a bearer link. Live view: a WebRTC offer to ``/console/webrtc/{camera}`` (the box's
:class:`~agent.ingest.live_webrtc.WebRtcServer`, H.264 passed through), with HLS through the console's own
:class:`~agent.ingest.live_hls.LiveServer` as the fallback, played by the vendored hls.js.

Long because: it is the one adapter between the box's ports and the pages (auth, data, events, media); the HTML is in pages.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
from aiohttp import web

from agent import config as cfgmod
from agent.box import schedules
from agent.box.ports import BoxControl, TargetBus
from agent.box.registry import Registry
from agent.ingest.cameras import Cameras
from agent.ingest.live_hls import LiveError, LiveServer
from agent.ingest.live_webrtc import WebRtcServer, WebRtcUnavailable
from agent.ops.metrics import Sample
from agent.storage.links import LinkMaker, normalise_media_path
from agent.storage.store import TargetStore

from . import pages
from .auth import LoginLimiter, Session, Sessions, UserDb, Users
from .i18n import pick, t

log = logging.getLogger("vcs_edge.console")

COOKIE = "vcs_console"
LOGIN_COOKIE = "vcs_console_login"
STATIC = Path(__file__).with_name("static")
PAGE_SIZE = 24
THUMB_TTL_S = 5.0
SSE_QUEUE = 256
SECRET_KEYS = ("secret", "password", "credential", "password_hash", "key")
_STATIC_FILES = {
    "console.js": "text/javascript",
    "hls.light-1.5.20.min.js": "text/javascript",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION = web.RequestKey("console_session", Session)
#: the parsed form of a POST whose CSRF token was checked (multipart or urlencoded)
FORM = web.RequestKey("console_form", dict)
MAX_PICTURE = 1024 * 1024  # the listener's request limit (aiohttp's default client_max_size)
MAX_PICTURE_PIXELS = 4096 * 4096


def redact(value: Any, key: str = "") -> Any:
    """The site file as JSON with every secret-looking field replaced by ``***`` (and URL credentials)."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    low = key.lower()
    if value not in (None, "") and any(s in low for s in SECRET_KEYS) and not low.endswith(("_id", "keys")):
        return "***"
    if isinstance(value, str) and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value


class _Cpu:
    """The process's CPU use between two reads, in % of one core."""

    def __init__(self) -> None:
        self.last = (time.monotonic(), time.process_time())
        self.pct = 0.0

    def read(self) -> float:
        now = (time.monotonic(), time.process_time())
        dt = now[0] - self.last[0]
        if dt >= 1.0:
            self.pct = 100.0 * (now[1] - self.last[1]) / dt
            self.last = now
        return self.pct


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ConsoleService:
    name = "console"

    def __init__(
        self,
        config: cfgmod.ConsoleConfig,
        site: cfgmod.SiteFile,
        *,
        registry: Registry,
        cameras: Cameras,
        store: TargetStore,
        links: LinkMaker,
        targets: TargetBus,
        box: BoxControl,
        webrtc: WebRtcServer | None,
        health: Callable[[], dict[str, Any]],
        data_dir: str | Path,
        secure: bool = False,
        embedder: Callable[[bytes, str], Any] | None = None,
        watch: Any = None,
    ) -> None:
        self.config = config
        #: the watch lists (agent.watch.book.WatchBook), shown read-only; changed through the API
        self.watch_book = watch
        self.site = site
        self.registry = registry
        self.cameras = cameras
        self.store = store
        self.links = links
        self.targets = targets
        self.box = box
        self.webrtc = webrtc
        self.health_fn = health
        self.data_dir = Path(data_dir)
        self.secure = secure
        self.embedder = embedder
        self.db = UserDb(self.data_dir)
        self.users = Users(((u.name, u.password_hash) for u in config.users), self.db)
        self.sessions = Sessions(config.session_ttl_s)
        self.limiter = LoginLimiter(config.login_attempts_per_min)
        self.hls = LiveServer(cameras, links, lambda: "", self.data_dir / "console-live")
        self._clients: set[asyncio.Queue[str]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._thumbs: dict[str, tuple[float, bytes]] = {}
        self._media_size: tuple[float, int] | None = None
        self._cpu = _Cpu()
        self.logins = 0
        self.login_failures = 0
        self.csrf_refused = 0
        self.unauthenticated = 0
        self.events_sent = 0

    # --- service ----------------------------------------------------------------------------------------

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        g, p = self._guard, self._guard_post
        routes.extend(
            [
                web.get("/console", self._to_console),
                web.get("/console/login", self.login_page),
                web.post("/console/login", self.login),
                web.post("/console/logout", p(self.logout)),
                web.get("/console/", g(self.overview)),
                web.get("/console/camera/{camera}", g(self.camera)),
                web.get("/console/targets", g(self.gallery)),
                web.get("/console/targets/{target}", g(self.target)),
                web.get("/console/search", g(self.search)),
                web.post("/console/search", p(self.search_post)),
                web.get("/console/watch", g(self.watch)),
                web.get("/console/instances", g(self.instances)),
                web.get("/console/config", g(self.site_config)),
                web.get("/console/events", g(self.events)),
                web.get("/console/api/targets", g(self.targets_json)),
                web.get("/console/api/live/{camera}", g(self.live_json)),
                web.post("/console/webrtc/{camera}", p(self.webrtc_offer)),
                web.delete("/console/webrtc/{camera}/{viewer}", p(self.webrtc_end)),
                web.get("/console/media/{path:.+}", g(self.media)),
                web.get("/console/thumb/{camera}.jpg", g(self.thumb)),
                web.get("/console/static/{name}", g(self.static)),
                web.get("/console/hls/{session}/{file}", g(self.hls_file)),
            ]
        )

    async def start(self) -> None:
        self._unsubscribe = self.targets.subscribe(self._on_targets)
        self.cameras.listeners.append(self._on_status)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        with contextlib.suppress(ValueError):
            self.cameras.listeners.remove(self._on_status)
        for q in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait("")
        await self.hls.close()
        self.db.close()

    def samples(self) -> Iterable[Sample]:
        for key in ("logins", "login_failures", "csrf_refused", "unauthenticated", "events_sent"):
            yield Sample(
                f"vcs_edge_console_{key}_total", "counter", f"Console {key}", {}, float(getattr(self, key))
            )
        yield Sample("vcs_edge_console_sessions", "gauge", "Console sessions", {}, float(len(self.sessions)))

    def health(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "event_clients": len(self._clients),
            "users": self.users.count(),
        }

    # --- auth -------------------------------------------------------------------------------------------

    def _lang(self, request: web.Request) -> str:
        return pick(
            request.query.get("lang") or request.cookies.get("lang"), request.headers.get("Accept-Language")
        )

    def _refresh(self) -> None:
        """Follow a reload of the site file: users, session lifetime and login limit come from the box's
        current ``console:`` section (the service itself is not rebuilt: its routes are the listener's)."""
        cfg = self.box.site.console
        if cfg is None or cfg is self.config:
            return
        self.config = cfg
        self.site = self.box.site
        self.users = Users(((u.name, u.password_hash) for u in cfg.users), self.db)
        self.sessions.ttl_s = cfg.session_ttl_s
        self.limiter.per_minute = cfg.login_attempts_per_min

    def _session(self, request: web.Request) -> Any:
        self._refresh()
        return self.sessions.get(request.cookies.get(COOKIE))

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            sess = self._session(request)
            if sess is None:
                self.unauthenticated += 1
                if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
                    raise web.HTTPFound("/console/login")
                raise web.HTTPUnauthorized(text="log in first\n")
            request[SESSION] = sess
            return await handler(request)

        return guarded

    def _guard_post(self, handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            sess = request[SESSION]
            token = request.headers.get("X-CSRF-Token")
            if token is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form = dict(await request.post())
                request[FORM] = form
                token = str(form.get("csrf", ""))
            if not token or not secrets.compare_digest(token, sess.csrf):
                self.csrf_refused += 1
                raise web.HTTPForbidden(text="bad or missing CSRF token\n")
            return await handler(request)

        return self._guard(checked)

    def _cookie(self, resp: web.StreamResponse, name: str, value: str, max_age: int | None = None) -> None:
        resp.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/console",
            httponly=True,
            samesite="Strict",
            secure=self.secure,
        )

    def _html(self, request: web.Request, active: str, body: str, title: str = "") -> web.Response:
        sess = request[SESSION]
        lang = self._lang(request)
        resp = web.Response(
            text=pages.layout(lang, active, body, csrf=sess.csrf, user=sess.user, title=title),
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'",
            },
        )
        if request.query.get("lang") in ("en", "zh"):
            resp.set_cookie(
                "lang", request.query["lang"], path="/console", samesite="Strict", max_age=365 * 86400
            )
        return resp

    async def _to_console(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    async def login_page(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        token = secrets.token_urlsafe(24)
        resp = web.Response(
            text=pages.login(lang, token), content_type="text/html", headers={"Cache-Control": "no-store"}
        )
        self._cookie(resp, LOGIN_COOKIE, token, 600)
        if request.query.get("lang") in ("en", "zh"):
            resp.set_cookie(
                "lang", request.query["lang"], path="/console", samesite="Strict", max_age=365 * 86400
            )
        return resp

    async def login(self, request: web.Request) -> web.Response:
        self._refresh()
        lang = self._lang(request)
        form = await request.post()
        token = str(form.get("csrf", ""))
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not token or not cookie or not secrets.compare_digest(token, cookie):
            self.csrf_refused += 1
            raise web.HTTPForbidden(text="bad or missing CSRF token; reload the login page\n")
        addr = request.remote or "?"
        fresh = secrets.token_urlsafe(24)
        if not self.limiter.allowed(addr):
            resp = web.Response(
                status=429, text=pages.login(lang, fresh, t(lang, "too_many")), content_type="text/html"
            )
            self._cookie(resp, LOGIN_COOKIE, fresh, 600)
            return resp
        user = str(form.get("user", ""))[:64]
        password = str(form.get("password", ""))[:1024]
        ok = await asyncio.get_running_loop().run_in_executor(None, self.users.check, user, password)
        if not ok:
            self.login_failures += 1
            self.limiter.failed(addr)
            log.warning("console login failed for %r from %s", user[:64], addr)
            resp = web.Response(
                status=401,
                text=pages.login(lang, fresh, t(lang, "bad_login")),
                content_type="text/html",
            )
            self._cookie(resp, LOGIN_COOKIE, fresh, 600)
            return resp
        self.limiter.succeeded(addr)
        self.logins += 1
        sess = self.sessions.new(user)
        log.info("console login: %s from %s", user, addr)
        resp = web.HTTPFound("/console/")
        self._cookie(resp, COOKIE, sess.token, int(self.config.session_ttl_s))
        resp.del_cookie(LOGIN_COOKIE, path="/console")
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.end(request.cookies.get(COOKIE))
        resp = web.HTTPFound("/console/login")
        resp.del_cookie(COOKIE, path="/console")
        raise resp

    # --- data -------------------------------------------------------------------------------------------

    def _camera_rows(self) -> list[dict[str, Any]]:
        return [
            {"id": d.device_id, "name": d.name or d.device_id, "status": self.cameras.status(d.device_id)}
            for d in self.registry.pulled()
        ]

    def _link_state(self) -> dict[str, Any]:
        h = self.health_fn()
        gb = h.get("gb28181")
        mqtt = h.get("mqtt")
        return {
            "gb28181": {"state": str(gb.get("state")), "detail": gb.get("server", "")} if gb else None,
            "mqtt": {
                "state": "connected" if mqtt.get("connected") else "offline",
                "detail": mqtt.get("broker", ""),
            }
            if mqtt
            else None,
        }

    def _record(self, r: Any) -> dict[str, Any]:
        tz = ZoneInfo(self.site.site.timezone)
        attrs = [a.to_api() for a in r.attributes]
        short = ", ".join(f"{a['Key']}={a['Value']}" for a in attrs if a["Key"] != "BodyTargetId")
        return {
            "id": r.target_id,
            "type": r.target_type,
            "time": r.timestamp.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
            "camera": r.device_id,
            "attrs": short,
            "attributes": attrs,
            "crop": f"/console/media/{r.target_image_path}" if r.target_image_path else "",
            "frame": f"/console/media/{r.source_image_path}" if r.source_image_path else "",
            "box": [r.left_top_x, r.left_top_y, r.right_bottom_x, r.right_bottom_y],
            "score": float(r.score),
        }

    def _search(self, target_type: str, camera: str, page: int, size: int) -> tuple[list[Any], int]:
        from agent.analytics.targets import TARGET_TYPES

        types = [target_type] if target_type else list(TARGET_TYPES)
        devices = [camera] if camera else None
        want = page * size
        hits: list[Any] = []
        total = 0
        for tt in types:
            res = self.store.search(
                target_type=tt, device_ids=devices, page_number=1, page_size=min(1000, want)
            )
            total += res.total_count
            hits.extend(h.record for h in res.hits)
        hits.sort(key=lambda r: r.timestamp, reverse=True)
        return hits[(page - 1) * size : page * size], total

    # --- pages ------------------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        usage = shutil.disk_usage(self.store.media_root)
        used = await self._media_bytes()
        storage = {"targets": self.store.count(), "used_bytes": used, "free_bytes": usage.free}
        proc = {"cpu_pct": self._cpu.read(), "rss_bytes": _rss_bytes()}
        body = pages.overview(lang, self._camera_rows(), self._link_state(), storage, proc)
        return self._html(request, "overview", body)

    async def _media_bytes(self) -> int:
        """Bytes under the media root, walked off the loop at most once a minute (a big store has many files)."""
        now = time.monotonic()
        if self._media_size is None or now - self._media_size[0] > 60.0:

            def walk() -> int:
                total = 0
                for root, _dirs, files in os.walk(self.store.media_root):
                    for name in files:
                        with contextlib.suppress(OSError):
                            total += os.stat(os.path.join(root, name)).st_size
                return total

            self._media_size = (now, await asyncio.get_running_loop().run_in_executor(None, walk))
        return self._media_size[1]

    async def camera(self, request: web.Request) -> web.Response:
        cid = request.match_info["camera"]
        dev = self.registry.get(cid)
        if dev is None or dev.stream is None:
            raise web.HTTPNotFound(text="no such camera\n")
        insts = []
        for iid, runner in self.box.runners.items():
            cfg = runner.rt.config
            if cid in cfg.cameras:
                insts.append(
                    {
                        "id": iid,
                        "name": cfg.name or iid,
                        "algorithm": cfg.algorithm_id,
                        "status": runner.refresh_status().value,
                    }
                )
        recent, _ = self._search("", cid, 1, 12)
        cam = {
            "id": cid,
            "name": dev.name or cid,
            "status": self.cameras.status(cid),
            "hls": f"/console/api/live/{cid}",
        }
        body = pages.camera(self._lang(request), cam, insts, [self._record(r) for r in recent])
        return self._html(request, "overview", body, title=dev.name or cid)

    async def gallery(self, request: web.Request) -> web.Response:
        from agent.analytics.targets import TARGET_TYPES

        tt = request.query.get("type", "")
        cam = request.query.get("camera", "")
        if tt and tt not in TARGET_TYPES:
            raise web.HTTPBadRequest(text=f"type: one of {', '.join(TARGET_TYPES)}\n")
        try:
            page = max(1, min(10_000, int(request.query.get("page", "1"))))
        except ValueError:
            raise web.HTTPBadRequest(text="page: a number from 1\n") from None
        page = min(page, 1000 // PAGE_SIZE)
        hits, total = self._search(tt, cam, page, PAGE_SIZE)
        pages_n = max(1, min(1000 // PAGE_SIZE, (total + PAGE_SIZE - 1) // PAGE_SIZE))
        cams = [d.device_id for d in self.registry.pulled()]
        body = pages.targets(
            self._lang(request),
            [self._record(r) for r in hits],
            types=list(TARGET_TYPES[:4]),
            cameras=cams,
            chosen_type=tt,
            chosen_camera=cam,
            page=page,
            pages=pages_n,
            total=total,
        )
        return self._html(request, "targets", body)

    async def target(self, request: web.Request) -> web.Response:
        rec = self.store.get(request.match_info["target"][:64])
        if rec is None:
            raise web.HTTPNotFound(text="no such target (expired or never stored)\n")
        r = self._record(rec)
        r["frame_size"] = None
        if rec.source_image_path:
            path = str(Path(self.store.media_root) / rec.source_image_path)
            full = await asyncio.get_running_loop().run_in_executor(None, cv2.imread, path)
            if full is not None:
                r["frame_size"] = (full.shape[1], full.shape[0])
        return self._html(request, "targets", pages.target_detail(self._lang(request), r))

    async def search(self, request: web.Request) -> web.Response:
        sess = request[SESSION]
        body = pages.search(self._lang(request), sess.csrf, available=self.embedder is not None)
        return self._html(request, "search", body)

    async def search_post(self, request: web.Request) -> web.Response:
        """Search by picture: the uploaded picture's embedding against stored targets (best first)."""
        from pipelines.images import image_size

        lang = self._lang(request)
        sess = request[SESSION]
        form = request[FORM]
        ttype = str(form.get("type", "Face"))
        ttype = ttype if ttype in ("Face", "Body") else "Face"
        upload = form.get("picture")
        raw = upload.file.read(MAX_PICTURE + 1) if isinstance(upload, web.FileField) else b""
        size = image_size(raw) if raw and len(raw) <= MAX_PICTURE else None
        if self.embedder is None:
            return self._html(request, "search", pages.search(lang, sess.csrf, available=False))
        if size is None or size[0] * size[1] > MAX_PICTURE_PIXELS:
            body = pages.search(
                lang, sess.csrf, available=True, error=t(lang, "bad_picture"), chosen_type=ttype
            )
            return self._html(request, "search", body)
        found = await asyncio.get_running_loop().run_in_executor(None, self.embedder, raw, ttype)
        emb = found.vector if found is not None else None  # a QueryVector: the largest target's
        if emb is None:
            body = pages.search(
                lang, sess.csrf, available=True, error=t(lang, "nothing_found"), chosen_type=ttype
            )
            return self._html(request, "search", body)
        res = self.store.search(
            target_type=ttype, query_embedding=emb, similarity_threshold=0.3, page_size=48
        )
        cards = []
        for hit in res.hits:
            r = self._record(hit.record)
            r["attrs"] = f"{hit.similarity:.2f}" if hit.similarity is not None else r["attrs"]
            cards.append(r)
        body = pages.search(lang, sess.csrf, available=True, results=cards, chosen_type=ttype)
        return self._html(request, "search", body)

    async def watch(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        if self.watch_book is None:
            return self._html(request, "watch", pages.unavailable(lang, "watch", 12))
        tasks, policies, items = await asyncio.to_thread(self.watch_book.snapshot)
        return self._html(request, "watch", pages.watch(lang, tasks, policies, items))

    async def instances(self, request: web.Request) -> web.Response:
        tz = ZoneInfo(self.site.site.timezone)
        now = datetime.now(tz)
        week_start = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        week_end = week_start + timedelta(days=7)
        rows = []
        for iid, runner in self.box.runners.items():
            cfg = runner.rt.config
            windows: dict[int, list[tuple[float, float]]] = {}
            try:
                sched = cfg.schedule.build(self.site.site.timezone, now.date())
                spans = schedules.intervals(sched, week_start.astimezone(UTC), week_end.astimezone(UTC))
            except Exception:  # a schedule that cannot be drawn still lists the instance
                spans = []
            for a, b in spans:
                a, b = max(a, week_start), min(b if b > a else a + timedelta(minutes=5), week_end)
                while a < b:
                    day = int((a - week_start).total_seconds() // 86400)
                    day_end = week_start + timedelta(days=day + 1)
                    seg_end = min(b, day_end)
                    start_f = (a - (week_start + timedelta(days=day))).total_seconds() / 86400
                    end_f = (seg_end - (week_start + timedelta(days=day))).total_seconds() / 86400
                    windows.setdefault(day, []).append((start_f, max(end_f, start_f + 0.003)))
                    a = seg_end
            rows.append(
                {
                    "id": iid,
                    "name": cfg.name or iid,
                    "algorithm": cfg.algorithm_id,
                    "cameras": list(cfg.cameras),
                    "status": runner.refresh_status().value,
                    "schedule": cfg.schedule.type.value
                    if hasattr(cfg.schedule.type, "value")
                    else str(cfg.schedule.type),
                    "windows": windows,
                }
            )
        return self._html(request, "instances", pages.instances(self._lang(request), rows, week_start))

    async def site_config(self, request: web.Request) -> web.Response:
        data = redact(self.box.site.model_dump(mode="json"))
        return self._html(request, "config", pages.config(self._lang(request), data))

    # --- JSON, events, media ----------------------------------------------------------------------------

    async def targets_json(self, request: web.Request) -> web.Response:
        hits, total = self._search(
            request.query.get("type", ""), request.query.get("camera", ""), 1, PAGE_SIZE
        )
        return web.json_response({"total": total, "targets": [self._record(r) for r in hits]})

    def _broadcast(self, kind: str, data: Any) -> None:
        msg = f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
        for q in list(self._clients):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:  # a stalled page: it reloads on reconnect
                pass

    def _on_targets(self, records: list[Any]) -> None:
        if self._clients:
            self._broadcast("targets", [self._record(r) for r in records])

    def _on_status(self, device_id: str, status: str, error: str | None) -> None:
        if self._clients:
            self._broadcast("status", {"camera": device_id, "status": status, "error": error})

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue(SSE_QUEUE)
        self._clients.add(q)
        try:
            await resp.write(b": hello\n\n")
            while True:
                try:
                    msg = await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    msg = ": keepalive\n\n"
                if not msg:
                    break
                await resp.write(msg.encode())
                self.events_sent += 1
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            self._clients.discard(q)
        return resp

    async def media(self, request: web.Request) -> web.StreamResponse:
        rel = normalise_media_path(request.match_info.get("path", ""))
        root = Path(self.store.media_root).resolve()
        target = (root / rel).resolve() if rel else None
        if target is None or not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound(text="media no longer stored\n")
        return web.FileResponse(
            target, headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        )

    async def thumb(self, request: web.Request) -> web.Response:
        cid = request.match_info["camera"]
        dev = self.registry.get(cid)
        if dev is None or dev.stream is None:
            raise web.HTTPNotFound(text="no such camera\n")
        cached = self._thumbs.get(cid)
        if cached is None or time.monotonic() - cached[0] > THUMB_TTL_S:
            frame = await self.cameras.snapshot(cid, 5.0)
            if frame is None:
                raise web.HTTPServiceUnavailable(text="no frame from the camera\n")
            img = frame.image
            scale = 320 / max(1, img.shape[1])
            small = cv2.resize(img, (320, max(1, int(img.shape[0] * scale))))
            ok, buf = await asyncio.get_running_loop().run_in_executor(None, cv2.imencode, ".jpg", small)
            if not ok:
                raise web.HTTPServiceUnavailable(text="thumbnail failed\n")
            cached = (time.monotonic(), buf.tobytes())
            self._thumbs[cid] = cached
        return web.Response(body=cached[1], content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        ctype = _STATIC_FILES.get(name)
        if ctype is None:
            raise web.HTTPNotFound()
        path = STATIC / name if name == "console.js" else STATIC / "vendor" / name
        return web.FileResponse(
            path, headers={"Content-Type": ctype, "Cache-Control": "private, max-age=300"}
        )

    # --- live ---------------------------------------------------------------------------------------------

    async def webrtc_offer(self, request: web.Request) -> web.Response:
        if self.webrtc is None:
            raise web.HTTPServiceUnavailable(text="WebRTC is not running on this box\n")
        body = await request.content.read(64 * 1024 + 1)
        try:
            viewer, answer = await self.webrtc.answer(
                request.match_info["camera"], body.decode("utf-8", "replace")
            )
        except WebRtcUnavailable as exc:
            return web.Response(status=exc.http_status, text=exc.message + "\n")
        loc = f"/console/webrtc/{viewer.camera_id}/{viewer.viewer_id}"
        return web.Response(
            status=201, text=answer, content_type="application/sdp", headers={"Location": loc}
        )

    async def webrtc_end(self, request: web.Request) -> web.Response:
        """WHEP's DELETE: the page leaves (the peer connection would otherwise end on ICE consent timeout)."""
        viewer = self.webrtc.viewers.get(request.match_info["viewer"]) if self.webrtc else None
        if self.webrtc is None or viewer is None or viewer.camera_id != request.match_info["camera"]:
            raise web.HTTPNotFound(text="no such viewer\n")
        await self.webrtc.close_viewer(viewer, "page closed")
        return web.Response(status=200)

    async def live_json(self, request: web.Request) -> web.Response:
        """The console's HLS URL of a camera (Retry while it starts), for the fallback player."""
        dev = self.registry.get(request.match_info["camera"])
        if dev is None or dev.stream is None:
            raise web.HTTPNotFound(text="no such camera\n")
        try:
            url = await self.hls.url(dev, 1)
        except LiveError as exc:
            return web.json_response({"code": exc.code, "message": exc.message}, status=exc.http_status)
        if url is None:
            return web.json_response({"code": "Retry"})
        path = url.split("/live/", 1)[1].split("?", 1)[0]
        return web.json_response({"code": "200", "url": f"/console/hls/{path}"})

    async def hls_file(self, request: web.Request) -> web.StreamResponse:
        """The console's HLS files behind the session (the LiveServer's own handler checks the signature, so the
        file is read from its session folder here, with the same name rules)."""
        sid, name = request.match_info["session"], request.match_info["file"]
        sess = next((s for s in self.hls.sessions() if s.session_id == sid), None)
        if sess is None or not (name == "index.m3u8" or (name.startswith("seg") and name.endswith(".ts"))):
            raise web.HTTPNotFound()
        sess.touch()
        path = sess.folder / name
        if not path.is_file() or "/" in name:
            raise web.HTTPNotFound()
        if name == "index.m3u8":
            text = path.read_text("utf-8", "replace")
            return web.Response(
                text=text, content_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "no-store"}
            )
        return web.FileResponse(path, headers={"Content-Type": "video/mp2t", "Cache-Control": "no-store"})
