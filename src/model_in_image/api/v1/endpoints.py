"""KServe V1 プロトコル：KServe の sklearn・xgboost・lightgbm のサーバーと同じ形。

`POST /v1/models/{name}:predict` は `{"instances": 行}`（または `{"inputs": 行}`）を受け、
`{"predictions": ...}` を返す。行の規則はシード API と同じ（データプレーン）。predictions は
クラス名を持つ分類器ならクラス名（KServe の sklearn サーバーの predict と同じくラベル）、
ほかのモデルは /predict と同じ値（回帰の予測値・確率のネットの確率・テンソル）。
誤りは KServe と同じ {"error": ...}。
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from pydantic import BaseModel, Field

from model_in_image.api.v2.endpoints import error_response
from model_in_image.codecs.decode import decode_json
from model_in_image.errors import InvalidInputError
from model_in_image.model.kinds import ModelKind
from model_in_image.state import ServerState
from model_in_image.transport.http import Request, Response
from model_in_image.transport.routing import PathParamDoc, Route, RouteDoc


class _Body(msgspec.Struct):
    instances: list[Any] | msgspec.UnsetType = msgspec.UNSET
    inputs: list[Any] | msgspec.UnsetType = msgspec.UNSET


_DECODER = msgspec.json.Decoder(_Body)


class PredictRequest(BaseModel):
    """V1 の推論リクエスト（instances か inputs のどちらか）。"""

    instances: list[Any] = Field(examples=[[[5.1, 3.5, 1.4, 0.2]]])


class PredictResponse(BaseModel):
    """V1 の推論応答。"""

    predictions: list[Any] = Field(examples=[["setosa"]])


class ModelStatus(BaseModel):
    """V1 のモデルの状態。"""

    name: str
    ready: bool


class ErrorResponse(BaseModel):
    """V1 のエラー応答。"""

    error: str


def decode_instances(body: bytes) -> list[Any]:
    """ボディから行を取り出す（instances か inputs。両方・どちらも無し・型違いは 400）。"""
    try:
        wire = decode_json(_DECODER, body, prefix="invalid JSON")
    except msgspec.ValidationError as exc:
        raise InvalidInputError.single(("body",), f"invalid V1 request: {exc}") from None
    given = [rows for rows in (wire.instances, wire.inputs) if rows is not msgspec.UNSET]
    if len(given) != 1:
        raise InvalidInputError.single(
            ("body",), 'a V1 request has exactly one of "instances" or "inputs"'
        )
    rows: list[Any] = given[0]
    return rows


class V1API:
    """KServe V1。モデル名は設定から決まり、他の名前は 404。"""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def model_status(self, request: Request) -> Response:
        """モデルの状態（名前と ready）"""
        self.state.lookup(request.params["model_name"], None)
        body = {"name": self.state.model_name, "ready": self.state.ready}
        return Response(200 if self.state.ready else 503, orjson.dumps(body))

    async def predict(self, request: Request) -> Response:
        """推論：{"instances": 行} → {"predictions": ...}"""
        dataplane = self.state.lookup(request.params["model_name"], None)
        rows = decode_instances(await request.body())
        values = await dataplane.predict_async(dataplane.validate(rows, loc=("body", "instances")))
        if dataplane.kind is ModelKind.CLASSIFIER and dataplane.classes is not None:
            predictions: Any = dataplane.labels_of(values)
        else:
            predictions = values.tolist()
        return Response(200, orjson.dumps({"predictions": predictions}))

    def routes(self) -> list[Route]:
        """V1 のルート表（:predict を先に照合する）。"""
        name = {"model_name": PathParamDoc("モデル名", self.state.model_name)}
        errors: dict[int | str, dict[str, Any]] = {
            code: {"model": ErrorResponse, "description": text}
            for code, text in ((400, "リクエストが不正"), (404, "モデルが無い"), (503, "準備中"))
        }
        return [
            _route("POST", "/v1/models/{model_name}:predict", self.predict, "predict", name,
                   PredictResponse, errors, {"requestBody": _request_body()}),
            _route("GET", "/v1/models/{model_name}", self.model_status, "model", name,
                   ModelStatus, errors, None),
        ]  # fmt: skip


def _route(
    method: str,
    path: str,
    handler: Any,
    operation: str,
    params: dict[str, PathParamDoc],
    model: type[BaseModel],
    responses: dict[int | str, dict[str, Any]],
    extra: dict[str, Any] | None,
) -> Route:
    doc: str = handler.__doc__ or ""
    route_doc = RouteDoc(
        summary=doc.split("（", maxsplit=1)[0].split("：", maxsplit=1)[0],
        description=doc,
        tag="v1",
        operation_id=f"v1_{operation}",
        response_model=model,
        responses=responses,
        openapi_extra=extra,
        path_params=params,
    )
    return Route(method, path, handler, error_response, route_doc)


def _request_body() -> dict[str, Any]:
    schema = PredictRequest.model_json_schema()
    return {"required": True, "content": {"application/json": {"schema": schema}}}
