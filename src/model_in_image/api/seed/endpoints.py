"""シード API のエンドポイント：HTTP の読み書きだけを行い、検証と推論はデータプレーンに委ねる。"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from model_in_image.api.seed import schemas
from model_in_image.codecs import seed as codec
from model_in_image.dataplane import DataPlane
from model_in_image.errors import ModelServerError, NoClassesError, NotReadyError
from model_in_image.model.onnx_model import Feeds
from model_in_image.state import ServerState
from model_in_image.transport.http import Request, Response
from model_in_image.transport.routing import Handler, Route, RouteDoc

HEALTH_OK = Response(200, b'{"health":"ok"}')
HEALTH_UNAVAILABLE = Response(503, b'{"health":"unavailable"}')
ROWS_LOC = ("body", "data")

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "JSON として解析できない"},
    413: {"model": schemas.ErrorResponse, "description": "ボディが上限を超えた"},
    415: {"model": schemas.ErrorResponse, "description": "Content-Type が JSON ではない"},
    422: {"model": schemas.ValidationErrorResponse, "description": "入力の検証エラー"},
}
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorResponse, "description": "モデルが読み込まれていない"}
}
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": schemas.PredictRequest.model_json_schema(),
                "example": schemas.PREDICT_EXAMPLE,
            }
        },
    }
}


def error_response(exc: ModelServerError) -> Response:
    """誤りを {"detail": ...} の応答にする（シード API・プローブ共通）。"""
    return Response(exc.status_code, codec.encode_error(exc))


def seed_route(
    method: str,
    path: str,
    handler: Handler,
    summary: str,
    model: type[BaseModel] | None,
    tag: str,
    *,
    responses: dict[int | str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    probe: bool = False,
) -> Route:
    """{"detail"} 形式の誤りを返すルート（ドキュメントの説明はハンドラの docstring）。"""
    name = getattr(handler, "__name__", "handler")
    doc = RouteDoc(
        summary=summary,
        description=handler.__doc__ or "",
        tag=tag,
        operation_id=f"{method.lower()}_{name}",
        response_model=model,
        responses=NOT_READY if responses is None else responses,
        openapi_extra=extra,
    )
    return Route(method, path, handler, error_response, doc, probe=probe)


@dataclass(frozen=True, slots=True)
class _Documents:
    """モデルを読み込んだ時点で決まる応答（リクエストごとには作らない）。"""

    metadata: Response
    labels: Response
    sample_probabilities: Response
    sample_label: Response
    numeric: bool


class SeedAPI:
    """シード API。prepare() までは 503（/health は unavailable）。"""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._documents: _Documents | None = None

    def prepare(self, dataplane: DataPlane) -> None:
        """読み込んだモデルから固定の応答を前計算する。"""
        values = dataplane.sample_values
        if dataplane.classes is None:  # クラスの無いモデル：ラベルの応答は理由を添えた誤り
            reason = NoClassesError(dataplane.no_classes_reason())
            labels = Response(404, codec.encode_error(reason))
            sample_label = error_response(reason)
        else:
            labels = Response(200, codec.encode_label_map(dataplane.labels))
            sample_label = Response(200, codec.encode_labels(dataplane.sample_labels))
        self._documents = _Documents(
            metadata=Response(200, codec.encode_metadata(dataplane)),
            labels=labels,
            sample_probabilities=Response(200, codec.encode_probabilities(values)),
            sample_label=sample_label,
            numeric=dataplane.input_width is not None,
        )

    def documents(self) -> _Documents:
        """前計算した応答（未読み込みなら 503）。"""
        if self._documents is None:
            raise NotReadyError("model is not loaded")
        return self._documents

    async def health(self, _: Request) -> Response:
        """シードの /health：モデルが読み込まれていれば ok。"""
        return HEALTH_OK if self.state.loaded else HEALTH_UNAVAILABLE

    async def metadata(self, _: Request) -> Response:
        """モデルから導いたメタデータ。"""
        return self.documents().metadata

    async def label(self, _: Request) -> Response:
        """ラベル一覧。"""
        return self.documents().labels

    async def predict_test(self, _: Request) -> Response:
        """サンプル入力の確率（起動時に計算済み）。"""
        return self.documents().sample_probabilities

    async def predict_test_label(self, _: Request) -> Response:
        """サンプル入力のラベル（起動時に計算済み）。"""
        return self.documents().sample_label

    async def predict(self, request: Request) -> Response:
        """確率を返す推論。"""
        dataplane, feeds = self._feeds(await request.body())
        probabilities = await dataplane.predict_async(feeds)
        return Response(200, codec.encode_probabilities(probabilities))

    async def predict_label(self, request: Request) -> Response:
        """ラベル名を返す推論（クラスの無いモデルは推論せずに 400）。"""
        if self.state.require().classes is None:
            return self.documents().sample_label
        dataplane, feeds = self._feeds(await request.body())
        _, labels = await dataplane.predict_labels_async(feeds)
        return Response(200, codec.encode_labels(labels))

    def _feeds(self, body: bytes) -> tuple[DataPlane, Feeds]:
        dataplane = self.state.require()
        numeric = self.documents().numeric
        rows = codec.decode_rows(body, numeric=numeric)
        return dataplane, dataplane.validate(rows, loc=ROWS_LOC, numeric=numeric)

    def routes(self) -> list[Route]:
        """シード API のルート表。"""
        health_responses: dict[int | str, dict[str, Any]] = {
            503: {"model": schemas.HealthResponse, "description": "未読み込み"}
        }
        predict_responses = {**NOT_READY, **ERRORS}
        return [
            seed_route(
                "GET",
                "/health",
                self.health,
                "ヘルスチェック（シード互換）",
                schemas.HealthResponse,
                "health",
                responses=health_responses,
                probe=True,
            ),
            seed_route(
                "GET",
                "/metadata",
                self.metadata,
                "モデルのメタデータ",
                schemas.MetadataResponse,
                "model",
            ),
            seed_route(
                "GET", "/label", self.label, "ラベル一覧", schemas.LabelMapResponse, "model"
            ),
            seed_route(
                "GET",
                "/predict/test",
                self.predict_test,
                "サンプル入力の確率",
                schemas.ProbabilityResponse,
                "predict",
            ),
            seed_route(
                "GET",
                "/predict/test/label",
                self.predict_test_label,
                "サンプル入力のラベル",
                schemas.LabelResponse,
                "predict",
            ),
            seed_route(
                "POST",
                "/predict",
                self.predict,
                "推論（確率）",
                schemas.ProbabilityResponse,
                "predict",
                responses=predict_responses,
                extra=PREDICT_BODY,
            ),
            seed_route(
                "POST",
                "/predict/label",
                self.predict_label,
                "推論（ラベル名）",
                schemas.LabelResponse,
                "predict",
                responses=predict_responses,
                extra=PREDICT_BODY,
            ),
        ]
