"""The API listener: aiohttp on its own address (optionally TLS), query and form merged, signature checked,
``Action`` dispatched by product (the signed ``Version``, see :mod:`agent.api.dispatch`), the response
rendered as JSON or XML with a RequestId.

Every answer has the VCS shape (``RequestId``, ``HostId``, ``Code``, ``Message``), bad input included: a body
that cannot be read (unknown charset, broken multipart, over ``MAX_BODY``) is a 4xx from the handler, and what
aiohttp's HTTP parser refuses before any handler runs (garbage bytes, an over-long request line or header, a bad
Content-Length) goes through :class:`_RequestHandler`, whose ``handle_error`` renders the same shape. Each
refusal is counted by Code and logged as one line, never a traceback; only a bug (InternalError) logs one.

``Action`` comes only from what is signed. The ``x-acs-action`` header that the SDKs also send is not
covered by the RPC signature (SignatureVersion 1.0 signs the parameters, no header), so an RPC-signed request
runs the ``Action`` parameter whatever the header says; an ACS3-HMAC-SHA256 request (the imgsearch and
LinkVisual SDKs) signs ``x-acs-action`` and ``x-acs-version`` and runs those.

Also serves the signed links it hands out (``/media/...``: targets and GetDevicePicture snapshots; ``/live/...``
of GetDeviceLiveUrl), with the box's one signer.
"""

from __future__ import annotations

import codecs
import contextvars
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from agent.box.jobs import JobRunner, JobStore
from agent.box.overlay import Overlay
from agent.box.ports import CameraPort
from agent.box.uploads import Uploads
from agent.ingest.live_hls import LiveServer
from agent.recording.playback import RecordServer
from agent.search.imagedb import ImageDbStore
from agent.storage.links import LinkMaker, MediaServer, listener_url

from . import render, signature
from .actions import load_all, picture_jobs
from .auth import Authenticator
from .context import ApiContext, Box
from .dispatch import PRODUCTS, VERSIONS
from .errors import ApiError, invalid
from .nonces import NonceStore
from .params import Params
from .settings import ApiConfig

log = logging.getLogger("vcs_edge.api")

MAX_BODY = 2 * 1024 * 1024
LIVE_DIR = "live"
LINK_PREFIXES = ("/media/", "/live/", "/record/", "/webrtc/", "/flv/")

#: charsets a form body may declare (the SDKs send UTF-8 and sign its bytes)
CHARSETS = ("utf-8", "ascii")

request_base: contextvars.ContextVar[str] = contextvars.ContextVar("request_base", default="")


class _RequestHandler(RequestHandler):
    """aiohttp's connection handler with VCS-shaped answers to what its HTTP parser refuses."""

    api: ApiServer

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # the answer is half sent: nothing else can be said
            raise ConnectionError("Response is sent already, cannot send another response")
        return self.api.transport_error(request, status, exc, message)


class _Server(web.Server):
    api: ApiServer

    def __call__(self) -> RequestHandler:
        handler = _RequestHandler(self, loop=self._loop, **self._kwargs)
        handler.api = self.api
        return handler


class _Runner(web.AppRunner):
    """An AppRunner whose connections are :class:`_RequestHandler` (aiohttp has no public hook for the
    parser's error answers)."""

    __slots__ = ("_api",)

    def __init__(self, app: web.Application, api: ApiServer) -> None:
        super().__init__(app, access_log=None)
        self._api = api

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        server = _Server(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            **base._kwargs,
        )
        server.api = self._api
        return server


class ApiServer:
    """``await ApiServer(box, config, overlay, links, data_dir).start()`` after the box started; ``stop()``
    before it stops. It owns nothing but its listener: the objects it makes are the overlay's, the links the
    link maker's; the image databases (``imagedb.db``) and the job table (``jobs.db``) are files of
    ``data_dir`` that it opens and closes, so a rebuild of the API service finds them as they were (a job
    running at the rebuild runs again). Counters: ``requests``, ``errors`` (by Code)."""

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
        webrtc: Any = None,
        flv: Any = None,
        clock: Callable[[], float] = time.time,
        recordings: Any = None,
        uploads: Uploads | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.nonces = NonceStore(self.data_dir, config.timestamp_skew_s)
        self.auth = Authenticator(config, self.nonces, clock)
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
            webrtc=webrtc,
            flv=flv,
            uploads=uploads,
        )
        if recordings is not None:
            self.ctx.recordings = RecordServer(recordings, links)
        if cameras is not None:
            self.ctx.live = LiveServer(cameras, links, self.base_url, self.data_dir / LIVE_DIR)
        self.ctx.imagedb = ImageDbStore(self.data_dir)
        self.ctx.jobs = JobRunner(JobStore(self.data_dir))
        if target_store is not None:
            picture_jobs.register(self.ctx.jobs, target_store)
        self.actions = load_all()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._http_errors])
        app.router.add_route("POST", "/", self.handle)
        app.router.add_route("GET", "/", self.handle)
        store = self.ctx.target_store
        if store is not None:  # the links this API hands out are served on its own listener too
            app.router.add_routes([MediaServer(store.media_root, self.links.signer).route()])
        if self.ctx.live is not None:
            self.ctx.live.add_routes(app)
        if self.ctx.recordings is not None:
            app.router.add_routes([self.ctx.recordings.route()])
        for extra in (
            self.ctx.webrtc,
            self.ctx.flv,
        ):  # WebRTC offers and HTTP-FLV on the links this API makes
            if extra is not None:
                app.router.add_routes(extra.routes())
        return app

    @web.middleware
    async def _http_errors(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """The router's own refusals (an unknown path, a method other than GET/POST) in the VCS shape; the
        signed links (/media, /snapshots, /live) keep their plain answers for players."""
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400 or request.path.startswith(LINK_PREFIXES):
                raise
            self.requests += 1
            code = {404: "InvalidPath", 405: "UnsupportedHTTPMethod"}.get(exc.status, "InvalidRequest")
            log.info(
                "API request from %s refused: %s %s %s",
                request.remote,
                code,
                request.method,
                request.path[:200],
            )
            what = f"{request.method} {request.path[:200]}"
            return self._error(
                render.new_request_id(),
                "JSON",
                code,
                f"{what}: {exc.reason}; the API answers GET and POST on /",
                exc.status,
            )

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert or not self.config.tls_key:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def start(self) -> None:
        self._runner = _Runner(self.app(), self)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=self._ssl())
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        self.ctx.jobs.start()
        log.info("VCS API listening on %s", self.listen_url)

    async def stop(self) -> None:
        if self.ctx.live is not None:
            await self.ctx.live.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.ctx.jobs.stop()
        self.ctx.jobs.store.close()
        self.ctx.imagedb.close()
        self.nonces.close()

    @property
    def listen_url(self) -> str:
        return listener_url(self.config.host, self.port, tls=bool(self.config.tls_cert))

    def base_url(self) -> str:
        """Base of the URLs handed out: agent.public_url, else the address the caller reached us on."""
        return self.links.base(request_base.get() or self.listen_url)

    # -- requests -------------------------------------------------------------------------------------------

    def host_id(self) -> str:
        """HostId of the error bodies: the address callers reach this box on."""
        return urlsplit(self.base_url()).netloc

    def _error(self, rid: str, fmt: str, code: str, message: str, status: int) -> web.Response:
        self.errors[code] += 1
        body = {"RequestId": rid, "HostId": self.host_id(), "Code": code, "Message": message}
        data, ctype = render.render(body, fmt, "Error")
        return web.Response(
            body=data, status=status, headers={"Content-Type": ctype, "x-acs-request-id": rid}
        )

    def transport_error(
        self, request: BaseRequest, status: int, exc: BaseException | None, message: str | None
    ) -> web.Response:
        """The answer to a request aiohttp's parser refused (or to a crash outside :meth:`handle`)."""
        self.requests += 1
        rid = render.new_request_id()
        if status >= 500:
            log.error("API request from %s failed: %r", request.remote, exc, exc_info=exc)
            resp = self._error(
                rid,
                "JSON",
                "InternalError",
                "The request processing has failed due to some unknown error.",
                500,
            )
        else:
            reason = " ".join(str(getattr(exc, "message", None) or message or "Bad Request").split())
            if len(reason) > 200:
                reason = reason[:197] + "..."
            log.info("API request from %s refused: MalformedRequest %d %s", request.remote, status, reason)
            resp = self._error(rid, "JSON", "MalformedRequest", f"not a valid HTTP request: {reason}", status)
        resp.force_close()
        return resp

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            charset = request.charset
            if charset is not None:
                try:
                    name = codecs.lookup(charset).name
                except LookupError:
                    name = ""
                if name not in CHARSETS:
                    raise invalid(
                        "Content-Type",
                        f"charset {charset[:40]!r} is not allowed; allowed: {', '.join(CHARSETS)}",
                    )
            try:
                form = await request.post()
            except web.HTTPException:
                raise
            except Exception as exc:  # a body aiohttp cannot read is the caller's fault, never ours
                raise ApiError(
                    "InvalidParameter",
                    f"malformed request: the body could not be read ({type(exc).__name__}: {exc})"[:300],
                ) from None
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
        request_base.set(f"{request.scheme}://{request.host}")
        try:
            params = await self._params(request)
            fmt_raw = params.get("Format") or "JSON"
            if fmt_raw.upper() in ("JSON", "XML"):
                fmt = fmt_raw.upper()
            # the signed Action only: x-acs-action is outside the signature (see the module docstring)
            action = params.get("Action") or ""
            if fmt_raw.upper() not in ("JSON", "XML"):
                raise invalid("Format", f"{fmt_raw!r} is not allowed; allowed values: JSON, XML")
            authorization = request.headers.get("Authorization", "")
            if authorization.startswith(signature.V3_ALGORITHM):
                # V3: Action and Version are signed headers; the query is signed, the body by its hash
                headers = {k.lower(): request.headers.getall(k) for k in request.headers}
                raw = await request.read()
                self.auth.check_v3(request.method, request.path, dict(request.query), headers, raw)
                params["Action"] = action = request.headers.get("x-acs-action", "")
                params["Version"] = request.headers["x-acs-version"]
            else:
                self.auth.check(request.method, params)
            if not action:
                raise invalid("Action", "required: the name of the call, such as DescribeIpcs")
            product = VERSIONS[params["Version"]]  # checked by auth
            handler = self.actions.get((product, action))
            if handler is None:
                raise ApiError(
                    "InvalidAction.NotFound",
                    f"Action: {action!r} is not an action of this box's {PRODUCTS[product]} API "
                    f"(Version {product})",
                    404,
                )
            body = await handler(self.ctx, Params(params))
        except ApiError as exc:
            log.info("API %s refused: %s %s", action, exc.code, exc.message[:300])
            return self._error(rid, fmt, exc.code, exc.message, exc.http_status)
        except ValueError as exc:  # malformed body (bad encoding, oversize fields) reported, never a crash
            log.info("API %s refused: InvalidParameter malformed request: %s", action, str(exc)[:300])
            return self._error(rid, fmt, "InvalidParameter", f"malformed request: {exc}", 400)
        except web.HTTPException as exc:  # aiohttp's own refusals (413 body too large...) in the VCS shape
            log.info("API %s refused: %d %s", action, exc.status, exc.reason)
            code = "RequestEntityTooLarge" if exc.status == 413 else "InvalidRequest"
            return self._error(rid, fmt, code, f"{exc.reason}: {exc.text or ''}"[:300], exc.status)
        except Exception:
            log.exception("API %s failed", action)
            return self._error(
                rid, fmt, "InternalError", "The request processing has failed due to some unknown error.", 500
            )
        out = {"RequestId": rid, **body}
        data, ctype = render.render(out, fmt, f"{action}Response")
        return web.Response(body=data, headers={"Content-Type": ctype, "x-acs-request-id": rid})
