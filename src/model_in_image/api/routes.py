"""シード API のルート定義（ハンドラ 1 つを高速経路と FastAPI の両方で使う）。"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from model_in_image.api import schemas
from model_in_image.api.hotpath import HotRoute, run_hot_route
from model_in_image.api.state import ServerState
from model_in_image.errors import ModelServerError
from model_in_image.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

HEALTH_OK = b'{"health":"ok"}'
HEALTH_UNAVAILABLE = b'{"health":"unavailable"}'


def health(state: ServerState, _: bytes) -> tuple[int, bytes]:
    """シードの /health：モデルが読み込まれていれば ok。"""
    return (200, HEALTH_OK) if state.loaded else (503, HEALTH_UNAVAILABLE)


def livez(_state: ServerState, _: bytes) -> tuple[int, bytes]:
    """liveness：プロセスが応答できれば 200。"""
    return 200, b'{"status":"alive"}'


def readyz(state: ServerState, _: bytes) -> tuple[int, bytes]:
    """readiness：読み込み・ウォームアップ済みでドレイン中でなければ 200。"""
    if state.ready:
        return 200, b'{"status":"ready"}'
    return 503, b'{"status":"draining"}' if state.loaded else b'{"status":"loading"}'


def metadata(state: ServerState, _: bytes) -> tuple[int, bytes]:
    """モデルから導いたメタデータ。"""
    return 200, state.require_service().metadata_json


def label(state: ServerState, _: bytes) -> tuple[int, bytes]:
    """ラベル一覧。"""
    return 200, state.require_service().labels_json


def predict_test(state: ServerState, _: bytes) -> tuple[int, bytes]:
    """サンプル入力の確率（起動時に計算済み）。"""
    return 200, state.require_service().sample_proba_json


def predict_test_label(state: ServerState, _: bytes) -> tuple[int, bytes]:
    """サンプル入力のラベル（起動時に計算済み）。"""
    return 200, state.require_service().sample_label_json


def predict(state: ServerState, body: bytes) -> tuple[int, bytes]:
    """確率を返す推論。"""
    return 200, state.require_service().predict_proba_json(body)


def predict_label(state: ServerState, body: bytes) -> tuple[int, bytes]:
    """ラベル名を返す推論。"""
    return 200, state.require_service().predict_label_json(body)


def metrics(state: ServerState, _: bytes) -> tuple[int, bytes]:
    """Prometheus のテキスト形式（METRICS_ENABLED=false なら 404）。"""
    if state.metrics is None:
        raise ModelServerError("metrics are disabled", status_code=404)
    return 200, state.metrics.render()


HOT_ROUTES = (
    HotRoute("GET", "/health", health),
    HotRoute("GET", "/livez", livez),
    HotRoute("GET", "/readyz", readyz),
    HotRoute("GET", "/metadata", metadata),
    HotRoute("GET", "/label", label),
    HotRoute("GET", "/predict/test", predict_test),
    HotRoute("GET", "/predict/test/label", predict_test_label),
    HotRoute("POST", "/predict", predict, reads_body=True),
    HotRoute("POST", "/predict/label", predict_label, reads_body=True),
    HotRoute("GET", "/metrics", metrics, content_type=METRICS_CONTENT_TYPE),
)

# OpenAPI 用の説明（パス -> (要約, 応答モデル, タグ)）
_DOCS: dict[str, tuple[str, type[BaseModel] | None, str]] = {
    "/health": ("ヘルスチェック（シード互換）", schemas.HealthResponse, "health"),
    "/livez": ("liveness プローブ", schemas.ProbeResponse, "health"),
    "/readyz": ("readiness プローブ", schemas.ProbeResponse, "health"),
    "/metadata": ("モデルのメタデータ", schemas.MetadataResponse, "model"),
    "/label": ("ラベル一覧", schemas.LabelMapResponse, "model"),
    "/predict/test": ("サンプル入力の確率", schemas.ProbabilityResponse, "predict"),
    "/predict/test/label": ("サンプル入力のラベル", schemas.LabelResponse, "predict"),
    "/predict": ("推論（確率）", schemas.ProbabilityResponse, "predict"),
    "/predict/label": ("推論（ラベル名）", schemas.LabelResponse, "predict"),
    "/metrics": ("Prometheus メトリクス（テキスト形式）", None, "health"),
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "JSON として解析できない"},
    413: {"model": schemas.ErrorResponse, "description": "ボディが上限を超えた"},
    415: {"model": schemas.ErrorResponse, "description": "Content-Type が JSON ではない"},
    422: {"model": schemas.ValidationErrorResponse, "description": "入力の検証エラー"},
}
_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorResponse, "description": "モデルが読み込まれていない"}
}


class HotRouteResponse(Response):
    """FastAPI のルートから高速経路と同じハンドラを実行する応答。"""

    def __init__(self, route: HotRoute, state: ServerState, max_body: int) -> None:
        self.route = route
        self.state = state
        self.max_body = max_body
        self.background: BackgroundTask | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI として応答する。"""
        await run_hot_route(self.route, self.state, self.max_body, scope, receive, send)


def register_hot_routes(app: FastAPI, state: ServerState, max_body: int) -> None:
    """高速経路のルートを FastAPI にも登録する（ドキュメントと同一挙動のため）。"""
    for route in HOT_ROUTES:
        summary, model, tag = _DOCS[route.path]

        extra: dict[str, Any] | None = None
        responses: dict[int | str, dict[str, Any]] = dict(_NOT_READY)
        if model is None:
            text = {"schema": {"type": "string"}}
            responses = {200: {"content": {route.content_type.decode(): text}}}
        if route.reads_body:
            schema = schemas.PredictRequest.model_json_schema()
            extra = {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": schema,
                            "example": schemas.PREDICT_EXAMPLE,
                        }
                    },
                }
            }
            responses.update(_ERRORS)
        app.add_api_route(
            route.path,
            _endpoint(route, state, max_body),
            methods=[route.method],
            summary=summary,
            description=route.handler.__doc__,
            response_model=model,
            responses=responses,
            tags=[tag],
            openapi_extra=extra,
            operation_id=f"{route.method.lower()}_{route.handler.__name__}",
        )


def _endpoint(route: HotRoute, state: ServerState, max_body: int) -> Any:
    """ルートごとの FastAPI エンドポイント（引数なし：ボディはハンドラ側で読む）。"""

    async def endpoint() -> Response:
        return HotRouteResponse(route, state, max_body)

    endpoint.__name__ = route.handler.__name__
    return endpoint
