"""The API as one of the box's services: its own listener over the box's ports. It is given the overlay (the
objects it makes are the box's), so restarting it on a reload of ``api:`` changes nothing of what it made."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.box.overlay import Overlay
from agent.box.ports import BoxControl, CameraPort
from agent.box.uploads import Uploads
from agent.config import ApiConfig
from agent.ops.metrics import Sample
from agent.storage.links import LinkMaker

from .app import ApiServer


class ApiService:
    name = "api"

    def __init__(
        self,
        config: ApiConfig,
        box: BoxControl,
        overlay: Overlay,
        links: LinkMaker,
        data_dir: str | Path,
        *,
        target_store: Any = None,
        cameras: CameraPort | None = None,
        embedder: Callable[[bytes, str], Any] | None = None,
        recordings: Any = None,
        webrtc: Any = None,
        flv: Any = None,
        uploads: Uploads | None = None,
    ) -> None:
        self.config = config
        self.server = ApiServer(
            box,
            config,
            overlay,
            links,
            data_dir,
            target_store=target_store,
            cameras=cameras,
            embedder=embedder,
            recordings=recordings,
            webrtc=webrtc,
            flv=flv,
            uploads=uploads,
        )

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def samples(self) -> Iterable[Sample]:
        yield Sample(
            "vcs_edge_api_requests_total", "counter", "VCS API requests", {}, float(self.server.requests)
        )
        for code, n in self.server.errors.items():
            yield Sample(
                "vcs_edge_api_errors_total", "counter", "VCS API errors by Code", {"code": code}, float(n)
            )

    def health(self) -> dict[str, Any]:
        port = self.server.port
        return {"listening": f"{self.config.host}:{port}" if port else None}
