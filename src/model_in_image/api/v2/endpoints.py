"""V2 REST のエンドポイント：HTTP の読み書きだけを行い、検証と推論はデータプレーンに委ねる。

ワイヤー形式は codecs.v2。バイナリテンソル拡張（Inference-Header-Content-Length）のヘッダは
ここで読む。
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel

from model_in_image import __version__
from model_in_image.api.openapi import inline_refs
from model_in_image.api.v2 import schemas
from model_in_image.codecs import v2 as codec
from model_in_image.dataplane import DataPlane
from model_in_image.errors import (
    InvalidInputError,
    ModelServerError,
    NotReadyError,
    UnsupportedMediaTypeError,
)
from model_in_image.state import MODEL_VERSION, ServerState
from model_in_image.transport.http import FORM, Request, Response
from model_in_image.transport.routing import Handler, PathParamDoc, Route, RouteDoc

SERVER_NAME = "model-in-image"
EXTENSIONS = ("binary_tensor_data", "classification")
PLATFORM = "onnx_onnxv1"
HEADER_LENGTH = b"inference-header-content-length"
OCTET_STREAM = b"application/octet-stream"
MAX_LENGTH_DIGITS = 18

_ACCEPTED_MEDIA = (b"application/json", OCTET_STREAM, FORM)
_SERVER_METADATA = Response(
    200,
    orjson.dumps({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}),
)
_LIVE = Response(200, b'{"live":true}')
_READY = Response(200, b'{"ready":true}')

Responses = dict[int | str, dict[str, Any]]
Extra = dict[str, Any] | None

_REASONS = {
    400: "リクエストが不正（形・型・データ長・出力名など）",
    404: "モデル（またはその版）が無い",
    413: "ボディが上限を超えた",
    415: "Content-Type が JSON でもバイナリでもない、または圧縮されている",
    503: "モデルがまだ（または既に）準備できていない",
}
_BINARY_RESPONSE: Responses = {
    200: {
        "description": "推論結果。バイナリ出力を要求した場合は application/octet-stream："
        "JSON 部の長さが Inference-Header-Content-Length ヘッダにあり、その後にバイナリ部が続く。",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def error_body(message: str) -> bytes:
    """V2 のエラー本文 {"error": ...}。"""
    return orjson.dumps({"error": message})


def error_response(exc: ModelServerError) -> Response:
    """誤りを V2 の応答にする（入力の検証エラーは 400）。"""
    status = 400 if isinstance(exc, InvalidInputError) else exc.status_code
    return Response(status, error_body(codec.error_message(exc)))


def header_length_of(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """ヘッダを確かめ、Inference-Header-Content-Length を返す（無ければ None）。

    JSON 以外に application/octet-stream（バイナリ拡張）と FORM（ボディが JSON のときだけ。
    Request.body が確かめる）を受け付ける。それ以外の Content-Type と圧縮は 415。
    """
    length: int | None = None
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media not in _ACCEPTED_MEDIA and not media.endswith(b"+json"):
                raise UnsupportedMediaTypeError(
                    "Content-Type must be application/json or application/octet-stream, "
                    f"got {value.decode('latin-1')!r}"
                )
        elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            raise UnsupportedMediaTypeError(
                f"Content-Encoding {value.decode('latin-1')!r} is not supported"
            )
        elif name == HEADER_LENGTH:
            digits = value.strip()
            if not digits.isdigit() or len(digits) > MAX_LENGTH_DIGITS:
                raise codec.bad_request(
                    "Inference-Header-Content-Length must be a non-negative integer "
                    f"of at most {MAX_LENGTH_DIGITS} digits"
                )
            length = int(digits)
    return length


def encoded(response: codec.EncodedResponse) -> Response:
    """codecs.v2 の結果を HTTP の応答にする（バイナリ部があれば octet-stream）。"""
    if not response.binary:
        return Response(200, response.json_part)
    length = str(len(response.json_part)).encode()
    return Response(
        200,
        response.json_part + response.binary,
        OCTET_STREAM,
        ((HEADER_LENGTH, length),),
    )


async def infer(
    dataplane: DataPlane,
    body: bytes,
    header_length: int | None,
    catalog: codec.OutputCatalog | None = None,
) -> codec.EncodedResponse:
    """ボディ（JSON 部 + バイナリ部）を解析・検証して推論し、応答を直列化する。"""
    catalog = catalog or codec.OutputCatalog(dataplane)
    json_part, binary = codec.split_body(body, header_length)
    wire = codec.decode_request(json_part)
    outputs = codec.requested_outputs(wire, catalog.names, catalog.available)
    tensors = await catalog.compute(codec.feeds_of(dataplane, wire, binary), outputs)
    return codec.encode_response(dataplane, wire.id, outputs, tensors)


class V2API:
    """V2 REST。モデル名は設定から決まり、他の名前は 404。"""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._metadata: Response | None = None
        self._catalog: codec.OutputCatalog | None = None

    def prepare(self, dataplane: DataPlane) -> None:
        """読み込んだモデルのメタデータを前計算する。"""
        self._catalog = catalog = codec.OutputCatalog(dataplane)
        metadata = codec.model_metadata(dataplane, catalog, PLATFORM)
        self._metadata = Response(200, orjson.dumps(metadata))

    def _lookup(self, request: Request) -> DataPlane:
        params = request.params
        return self.state.lookup(params["model_name"], params.get("model_version"))

    async def server_metadata(self, _: Request) -> Response:
        """GET /v2：サーバー名・版・拡張。"""
        return _SERVER_METADATA

    async def server_live(self, _: Request) -> Response:
        """GET /v2/health/live：プロセスが応答できれば 200。"""
        return _LIVE

    async def server_ready(self, _: Request) -> Response:
        """GET /v2/health/ready：モデルが読み込み済みでドレイン中でなければ 200。"""
        if self.state.ready:
            return _READY
        return Response(503, error_body("server is not ready"))

    async def model_metadata(self, request: Request) -> Response:
        """モデルのメタデータ（入出力の名前・型・形）"""
        self._lookup(request)
        if self._metadata is None:
            raise NotReadyError("model is not loaded")
        return self._metadata

    async def model_ready(self, request: Request) -> Response:
        """モデルの readiness（ドレイン中も 503）"""
        self._lookup(request)
        if not self.state.ready:
            return Response(503, error_body(f"model {request.params['model_name']!r} is not ready"))
        return _READY

    async def infer(self, request: Request) -> Response:
        """推論（JSON、またはバイナリテンソル拡張）。出力は probabilities [N, C] と label [N]。"""
        dataplane = self._lookup(request)
        header_length = header_length_of(request.headers)
        body = await request.body(accept=None)  # Content-Type は header_length_of で確かめ済み
        return encoded(await infer(dataplane, body, header_length, self._catalog))

    def routes(self) -> list[Route]:
        """V2 のルート表。モデルのルートは版なし・版ありの 2 つずつ。"""
        name = PathParamDoc("モデル名", self.state.model_name)
        version = PathParamDoc("モデルの版", MODEL_VERSION)
        routes = [
            _route(
                "GET",
                "/v2",
                self.server_metadata,
                "server_metadata",
                schemas.ServerMetadataResponse,
            ),
            _route(
                "GET",
                "/v2/health/live",
                self.server_live,
                "server_live",
                schemas.LiveResponse,
                probe=True,
            ),
            _route(
                "GET",
                "/v2/health/ready",
                self.server_ready,
                "server_ready",
                schemas.ReadyResponse,
                _errors(503),
                probe=True,
            ),
        ]
        lookup_errors = _errors(404, 503)
        infer_responses = {**_BINARY_RESPONSE, **_errors(400, 404, 413, 415, 503)}
        model_routes: list[tuple[str, str, Handler, str, type[BaseModel], Responses, Extra]] = [
            (
                "GET",
                "",
                self.model_metadata,
                "metadata",
                schemas.ModelMetadataResponse,
                lookup_errors,
                None,
            ),
            (
                "GET",
                "/ready",
                self.model_ready,
                "ready",
                schemas.ReadyResponse,
                lookup_errors,
                None,
            ),
            (
                "POST",
                "/infer",
                self.infer,
                "infer",
                schemas.InferenceResponse,
                infer_responses,
                _infer_openapi(),
            ),
        ]
        for method, suffix, handler, operation, model, responses, extra in model_routes:
            base = "/v2/models/{model_name}"
            routes.append(
                _route(
                    method,
                    base + suffix,
                    handler,
                    f"model_{operation}",
                    model,
                    responses,
                    {"model_name": name},
                    extra=extra,
                )
            )
            versioned = base + "/versions/{model_version}" + suffix
            routes.append(
                _route(
                    method,
                    versioned,
                    handler,
                    f"model_version_{operation}",
                    model,
                    responses,
                    {"model_name": name, "model_version": version},
                    extra=extra,
                )
            )
        return routes


def _route(
    method: str,
    path: str,
    handler: Handler,
    operation: str,
    model: type[BaseModel],
    responses: Responses | None = None,
    params: dict[str, PathParamDoc] | None = None,
    *,
    extra: Extra = None,
    probe: bool = False,
) -> Route:
    """{"error"} 形式の誤りを返す V2 のルート（要約は docstring の最初の句）。"""
    doc: str = handler.__doc__ or ""
    route_doc = RouteDoc(
        summary=doc.split("（", maxsplit=1)[0].split("：", maxsplit=1)[0].rstrip("。"),
        description=doc,
        tag="v2",
        operation_id=f"v2_{operation}",
        response_model=model,
        responses=responses or {},
        openapi_extra=extra,
        path_params=params or {},
    )
    return Route(method, path, handler, error_response, route_doc, probe=probe)


def _errors(*codes: int) -> Responses:
    return {
        code: {"model": schemas.V2ErrorResponse, "description": _REASONS[code]} for code in codes
    }


def _infer_openapi() -> dict[str, Any]:
    schema = inline_refs(schemas.InferenceRequest.model_json_schema())
    example = schema.get("examples", [None])[0]
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema, "example": example},
                "application/octet-stream": binary,
            },
        }
    }
