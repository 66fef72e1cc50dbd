"""運用のためのルート：liveness・readiness プローブと Prometheus メトリクス。"""

from __future__ import annotations

from typing import Any

from model_in_image.api.seed import schemas
from model_in_image.api.seed.endpoints import seed_route
from model_in_image.errors import ModelServerError
from model_in_image.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from model_in_image.state import ServerState
from model_in_image.transport.http import Request, Response
from model_in_image.transport.routing import Route

ALIVE = Response(200, b'{"status":"alive"}')
READY = Response(200, b'{"status":"ready"}')
DRAINING = Response(503, b'{"status":"draining"}')
LOADING = Response(503, b'{"status":"loading"}')
METRICS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {METRICS_CONTENT_TYPE.decode(): {"schema": {"type": "string"}}}}
}


class Probes:
    """プローブとメトリクスのエンドポイント。"""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def livez(self, _: Request) -> Response:
        """liveness：プロセスが応答できれば 200。"""
        return ALIVE

    async def readyz(self, _: Request) -> Response:
        """readiness：読み込み・ウォームアップ済みでドレイン中でなければ 200。"""
        if self.state.ready:
            return READY
        return DRAINING if self.state.loaded else LOADING

    async def metrics(self, _: Request) -> Response:
        """Prometheus のテキスト形式（METRICS_ENABLED=false なら 404）。"""
        if self.state.metrics is None:
            raise ModelServerError("metrics are disabled", status_code=404)
        return Response(200, self.state.metrics.render(), METRICS_CONTENT_TYPE)

    def routes(self) -> list[Route]:
        """プローブとメトリクスのルート表。"""
        probe = schemas.ProbeResponse
        return [
            seed_route(
                "GET", "/livez", self.livez, "liveness プローブ", probe, "health", probe=True
            ),
            seed_route(
                "GET", "/readyz", self.readyz, "readiness プローブ", probe, "health", probe=True
            ),
            seed_route(
                "GET",
                "/metrics",
                self.metrics,
                "Prometheus メトリクス（テキスト形式）",
                None,
                "health",
                responses=METRICS_TEXT,
            ),
        ]
