"""The API as one of the supervisor's services: its own listener, the supervisor's store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.config import ApiConfig
from agent.ops.metrics import Sample

from .app import ApiServer

if TYPE_CHECKING:
    from agent.box.supervisor import Supervisor


class ApiService:
    name = "api"

    def __init__(self, sup: Supervisor, config: ApiConfig) -> None:
        self.sup = sup
        self.config = config
        self.server: ApiServer | None = None

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    async def start(self) -> None:
        self.server = ApiServer(
            self.sup,
            self.config,
            self.sup.site.agent.data_dir,
            target_store=self.sup.store,
            embedder=self.sup.embedder,
        )
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def samples(self) -> Iterable[Sample]:
        if self.server is None:
            return
        yield Sample(
            "vcs_edge_api_requests_total", "counter", "VCS API requests", {}, float(self.server.requests)
        )
        for code, n in self.server.errors.items():
            yield Sample(
                "vcs_edge_api_errors_total", "counter", "VCS API errors by Code", {"code": code}, float(n)
            )

    def health(self) -> dict[str, Any]:
        port = self.server.port if self.server else None
        return {"listening": f"{self.config.host}:{port}" if port else None}
