"""The API listener: aiohttp on its own address (optionally TLS), query and form merged, signature checked,
``Action`` dispatched, the response rendered as JSON or XML with a RequestId.

Also serves the signed links it hands out (``/media/...``: targets and GetDevicePicture snapshots; ``/live/...``
of GetDeviceLiveUrl), with the box's one signer.
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.box.overlay import Overlay
from agent.box.ports import CameraPort
from agent.ingest.live_hls import LiveServer
from agent.storage.links import LinkMaker, MediaServer, listener_url

from . import render
from .actions import load_all
from .auth import Authenticator
from .context import ApiContext, Box
from .errors import ApiError, invalid
from .params import Params
from .settings import ApiConfig

log = logging.getLogger("vcs_edge.api")

MAX_BODY = 2 * 1024 * 1024
LIVE_DIR = "live"

request_base: contextvars.ContextVar[str] = contextvars.ContextVar("request_base", default="")


class ApiServer:
    """``await ApiServer(box, config, overlay, links, data_dir).start()`` after the box started; ``stop()``
    before it stops. It owns nothing but its listener: the objects it makes are the overlay's, the links the
    link maker's. Counters: ``requests``, ``errors`` (by Code)."""

    def __init__(
        self,
        box: Box,
        config: ApiConfig,
        overlay: Overlay,
        links: LinkMaker,
        data_dir: str | Path,
        *,
        target_store: Any = None,
        cameras: CameraPort | None = None,
        embedder: Callable[[bytes, str], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.auth = Authenticator(config, clock)
        self.links = links
        self.ctx = ApiContext(
            box=box,
            config=config,
            overlay=overlay,
            data_dir=self.data_dir,
            base_url=self.base_url,
            links=links,
            target_store=target_store,
            embedder=embedder,
        )
        if cameras is not None:
            self.ctx.live = LiveServer(cameras, links, self.base_url, self.data_dir / LIVE_DIR)
        self.actions = load_all()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("POST", "/", self.handle)
        app.router.add_route("GET", "/", self.handle)
        store = self.ctx.target_store
        if store is not None:  # the links this API hands out are served on its own listener too
            app.router.add_routes([MediaServer(store.media_root, self.links.signer).route()])
        if self.ctx.live is not None:
            self.ctx.live.add_routes(app)
        return app

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert or not self.config.tls_key:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=self._ssl())
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        log.info("VCS API listening on %s", self.listen_url)

    async def stop(self) -> None:
        if self.ctx.live is not None:
            await self.ctx.live.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def listen_url(self) -> str:
        return listener_url(self.config.host, self.port, tls=bool(self.config.tls_cert))

    def base_url(self) -> str:
        """Base of the URLs handed out: agent.public_url, else the address the caller reached us on."""
        return self.links.base(request_base.get() or self.listen_url)

    # -- requests -------------------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            for k, v in form.items():
                if not isinstance(v, str):
                    raise invalid(k, "file uploads are not accepted; send parameters as form fields")
                params[k] = v
        return params

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        rid = render.new_request_id()
        fmt = "JSON"
        action = "Unknown"
        status = 200
        request_base.set(f"{request.scheme}://{request.host}")
        try:
            params = await self._params(request)
            fmt_raw = params.get("Format") or "JSON"
            if fmt_raw.upper() in ("JSON", "XML"):
                fmt = fmt_raw.upper()
            action = params.get("Action") or request.headers.get("x-acs-action") or ""
            if fmt_raw.upper() not in ("JSON", "XML"):
                raise invalid("Format", f"{fmt_raw!r} is not allowed; allowed values: JSON, XML")
            self.auth.check(request.method, params)
            if not action:
                raise invalid("Action", "required: the name of the call, such as DescribeIpcs")
            handler = self.actions.get(action)
            if handler is None:
                raise ApiError(
                    "InvalidAction.NotFound",
                    f"Action: {action!r} is not an action of this box's VCS API (Version 2020-05-15)",
                    404,
                )
            body = await handler(self.ctx, Params(params))
        except ApiError as exc:
            self.errors[exc.code] += 1
            status = exc.http_status
            body = {"Code": exc.code, "Message": exc.message}
            log.info("API %s refused: %s %s", action, exc.code, exc.message[:300])
        except ValueError as exc:  # malformed body (bad encoding, oversize fields) reported, never a crash
            self.errors["InvalidParameter"] += 1
            status = 400
            body = {"Code": "InvalidParameter", "Message": f"malformed request: {exc}"}
        except web.HTTPException:
            raise
        except Exception:
            log.exception("API %s failed", action)
            self.errors["InternalError"] += 1
            status = 500
            body = {
                "Code": "InternalError",
                "Message": "The request processing has failed due to some unknown error.",
            }
        out = {"RequestId": rid, **body}
        data, ctype = render.render(out, fmt, f"{action}Response" if status < 300 else "Error")
        return web.Response(
            body=data, status=status, headers={"Content-Type": ctype, "x-acs-request-id": rid}
        )
