"""Open Inference Protocol (V2, REST)：KServe / Triton / MLServer のクライアントと互換。

検証規則はシード API と同じ（inference.validate_rows）。設定されたモデルの推論パスは
V2Dispatcher が FastAPI より先に処理し、GET は高速経路（HotRoute）に載せる。
パラメータ付きの FastAPI ルートは他の名前（404）を受け、OpenAPI に載る。
バイナリテンソル拡張（Inference-Header-Content-Length）に対応する。
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import orjson
from fastapi import FastAPI
from fastapi import Path as PathParam
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from model_in_image import __version__
from model_in_image.api import v2_types as types
from model_in_image.api.hotpath import ClientDisconnectedError, Handler, HotRoute, read_body
from model_in_image.api.state import ServerState
from model_in_image.errors import (
    InvalidInputError,
    ModelServerError,
    NotReadyError,
    UnsupportedMediaTypeError,
)
from model_in_image.inference import InferenceService, validate_rows
from model_in_image.runtime import FloatArray
from model_in_image.settings import Settings

logger = logging.getLogger(__name__)

SERVER_NAME = "model-in-image"
EXTENSIONS = ("binary_tensor_data",)
MODEL_VERSION = "1"  # イメージがリリースなので、モデルの版は常に 1 つ
PLATFORM = "onnx_onnxv1"
PROBABILITIES = "probabilities"
LABEL = "label"
OUTPUT_NAMES = (PROBABILITIES, LABEL)
HEADER_LENGTH = b"inference-header-content-length"

_INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_MODEL_DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64"}
_ACCEPTED_MEDIA = (b"application/json", b"application/octet-stream")
_REQUEST = msgspec.json.Decoder(types.WireRequest)
_FLAT = msgspec.json.Decoder(list[float])
_NESTED = msgspec.json.Decoder(list[list[float]])
_INTERNAL_ERROR = b'{"error":"Internal server error"}'
_SERVER_METADATA = orjson.dumps(
    {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
)


def error_body(message: str) -> bytes:
    """V2 のエラー本文 {"error": ...}。"""
    return orjson.dumps({"error": message})


def _error(exc: ModelServerError) -> tuple[int, bytes]:
    """例外を V2 の (ステータス, 本文) にする（入力の検証エラーは 400）。"""
    if isinstance(exc, InvalidInputError):
        where = ".".join(str(part) for part in exc.errors[0]["loc"]) if exc.errors else "input"
        return 400, error_body(f"{where}: {exc.message}")
    return exc.status_code, error_body(exc.message)


def _bad_request(message: str) -> ModelServerError:
    return ModelServerError(message, status_code=400)


# --- モデルの特定・メタデータ・readiness ---


def lookup(state: ServerState, configured: str, name: str, version: str | None) -> InferenceService:
    """名前と版を確かめてサービスを返す（不明なら 404、未読み込みなら 503）。"""
    if name != configured:
        raise ModelServerError(f"unknown model: {name!r}", status_code=404)
    if version is not None and version != MODEL_VERSION:
        raise ModelServerError(
            f"model {name!r} has no version {version!r} (available: {MODEL_VERSION})",
            status_code=404,
        )
    if state.service is None:
        raise NotReadyError(f"model {name!r} is not ready")
    return state.service


def model_metadata_json(service: InferenceService, name: str) -> bytes:
    """モデルのメタデータ（入出力の名前・V2 の型・形。-1 はバッチ次元）。"""
    sig = service.classifier.signature
    payload = {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [
            {
                "name": sig.input_name,
                "datatype": _MODEL_DATATYPES[sig.input_type],
                "shape": [-1, sig.input_width],
            }
        ],
        "outputs": [
            {
                "name": PROBABILITIES,
                "datatype": _MODEL_DATATYPES.get(sig.output_type, "FP32"),
                "shape": [-1, sig.num_classes],
            },
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
        ],
    }
    return orjson.dumps(payload)


def model_metadata(
    state: ServerState, configured: str, name: str, version: str | None
) -> tuple[int, bytes]:
    """GET /v2/models/{name}[/versions/{v}]。"""
    try:
        return 200, model_metadata_json(lookup(state, configured, name, version), name)
    except ModelServerError as exc:
        return _error(exc)


def model_ready(
    state: ServerState, configured: str, name: str, version: str | None
) -> tuple[int, bytes]:
    """GET /v2/models/{name}[/versions/{v}]/ready（ドレイン中も 503）。"""
    try:
        lookup(state, configured, name, version)
    except ModelServerError as exc:
        return _error(exc)
    if not state.ready:
        return 503, error_body(f"model {name!r} is not ready")
    return 200, b'{"ready":true}'


def server_metadata(_state: ServerState, _body: bytes) -> tuple[int, bytes]:
    """GET /v2：サーバー名・版・拡張。"""
    return 200, _SERVER_METADATA


def server_live(_state: ServerState, _body: bytes) -> tuple[int, bytes]:
    """GET /v2/health/live：プロセスが応答できれば 200。"""
    return 200, b'{"live":true}'


def server_ready(state: ServerState, _body: bytes) -> tuple[int, bytes]:
    """GET /v2/health/ready：モデルが読み込み済みでドレイン中でなければ 200。"""
    if state.ready:
        return 200, b'{"ready":true}'
    return 503, error_body("server is not ready")


def _bound(
    func: Any, configured: str, version: str | None, doc: str
) -> Handler:  # func: model_metadata | model_ready
    def handler(state: ServerState, _body: bytes) -> tuple[int, bytes]:
        result: tuple[int, bytes] = func(state, configured, configured, version)
        return result

    handler.__name__ = func.__name__
    handler.__doc__ = doc
    return handler


def v2_hot_routes(model_name: str) -> list[HotRoute]:
    """設定されたモデルの GET を高速経路に載せる（推論は V2Dispatcher）。"""
    base = f"/v2/models/{model_name}"
    versioned = f"{base}/versions/{MODEL_VERSION}"
    return [
        HotRoute("GET", "/v2", server_metadata),
        HotRoute("GET", "/v2/health/live", server_live),
        HotRoute("GET", "/v2/health/ready", server_ready),
        HotRoute("GET", base, _bound(model_metadata, model_name, None, "モデルのメタデータ")),
        HotRoute("GET", versioned, _bound(model_metadata, model_name, MODEL_VERSION, "同上")),
        HotRoute("GET", f"{base}/ready", _bound(model_ready, model_name, None, "readiness")),
        HotRoute(
            "GET", f"{versioned}/ready", _bound(model_ready, model_name, MODEL_VERSION, "同上")
        ),
    ]


# --- 推論 ---


@dataclass(frozen=True, slots=True)
class V2Response:
    """推論の応答。header_length があれば JSON 部の後にバイナリ部が続く。"""

    status: int
    body: bytes
    header_length: int | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """応答ヘッダ。"""
        length = (b"content-length", str(len(self.body)).encode())
        if self.header_length is None:
            return [(b"content-type", b"application/json"), length]
        return [
            (b"content-type", b"application/octet-stream"),
            length,
            (HEADER_LENGTH, str(self.header_length).encode()),
        ]


def header_length_of(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """ヘッダを確かめ、Inference-Header-Content-Length を返す（無ければ None）。

    JSON 以外に application/octet-stream（バイナリ拡張）を受け付ける。それ以外の
    Content-Type と圧縮（Content-Encoding）は 415。
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
            if not value.strip().isdigit():
                raise _bad_request("Inference-Header-Content-Length must be a non-negative integer")
            length = int(value)
    return length


def split_body(body: bytes, header_length: int | None) -> tuple[bytes, bytes | None]:
    """ボディを JSON 部とバイナリ部に分ける。"""
    if header_length is None:
        return body, None
    if header_length > len(body):
        raise _bad_request(
            f"Inference-Header-Content-Length {header_length} exceeds the body ({len(body)} bytes)"
        )
    return body[:header_length], body[header_length:]


def decode_request(json_part: bytes) -> types.WireRequest:
    """JSON 部を型検証しながら解析する（UTF-8 でなければ 400）。"""
    if not json_part.isascii():  # msgspec は読み飛ばす値の UTF-8 を確かめない
        try:
            json_part.decode()
        except UnicodeDecodeError as exc:
            raise _bad_request(f"invalid JSON: not UTF-8 at byte {exc.start}") from None
    try:
        return _REQUEST.decode(json_part)
    except msgspec.ValidationError as exc:
        raise _bad_request(f"invalid inference request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise _bad_request(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _bad_request("invalid JSON: nested too deeply") from None


def requested_outputs(request: types.WireRequest) -> list[tuple[str, bool]]:
    """返す出力の (名前, バイナリか)。outputs が無ければ全出力。"""
    default_binary = request.parameters.binary_data_output if request.parameters else False
    if not request.outputs:
        return [(name, default_binary) for name in OUTPUT_NAMES]
    selected: list[tuple[str, bool]] = []
    for output in request.outputs:
        if output.name not in OUTPUT_NAMES:
            raise _bad_request(
                f"unknown output: {output.name!r} (the model has {', '.join(OUTPUT_NAMES)})"
            )
        if any(output.name == name for name, _ in selected):
            raise _bad_request(f"output {output.name!r} is requested twice")
        flag = output.parameters.binary_data if output.parameters else None
        selected.append((output.name, default_binary if flag is None else flag))
    return selected


def features_of(
    service: InferenceService, request: types.WireRequest, binary: bytes | None
) -> FloatArray:
    """入力テンソルを検証済みの [N, 幅] 配列にする（規則はシード API と同じ）。"""
    if len(request.inputs) != 1:
        raise _bad_request(f"the model has one input; the request has {len(request.inputs)}")
    tensor = request.inputs[0]
    dtype = _INPUT_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise _bad_request(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported "
            "(use FP32 or FP64)"
        )
    width = service.input_width
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise _bad_request(
            f"input {tensor.name!r}: shape {tensor.shape} does not match the model's [-1, {width}]"
        )
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        rows = _binary_rows(tensor, dtype, size, binary, width)
    else:
        if binary:
            raise _bad_request("the body has binary data but no input declares binary_data_size")
        rows = _json_rows(tensor, width)
    return validate_rows(
        rows,
        width=width,
        limits=service.limits,
        loc=("inputs", 0, "data"),
        dtype=service.classifier.input_dtype,
    )


def _binary_rows(
    tensor: types.WireInput, dtype: np.dtype[Any], size: int, binary: bytes | None, width: int
) -> Sequence[Sequence[float]]:
    if tensor.data is not msgspec.UNSET:
        raise _bad_request(f"input {tensor.name!r} has both data and binary_data_size")
    if binary is None:
        raise _bad_request("binary_data_size needs the Inference-Header-Content-Length header")
    if size != len(binary):
        raise _bad_request(
            f"input {tensor.name!r}: binary_data_size is {size} but the binary data has "
            f"{len(binary)} bytes"
        )
    rows, _ = tensor.shape
    expected = rows * width * dtype.itemsize
    if size != expected:
        raise _bad_request(
            f"input {tensor.name!r}: {size} bytes of binary data, but shape {tensor.shape} of "
            f"{tensor.datatype} needs {expected}"
        )
    return list(np.frombuffer(binary, dtype=dtype).reshape(rows, width))


def _json_rows(tensor: types.WireInput, width: int) -> Sequence[Sequence[float]]:
    if isinstance(tensor.data, msgspec.UnsetType):
        raise _bad_request(f"input {tensor.name!r} has no data")
    rows = tensor.shape[0]
    try:
        flat = _FLAT.decode(tensor.data)
    except msgspec.ValidationError:
        try:
            nested = _NESTED.decode(tensor.data)
        except msgspec.ValidationError as exc:
            raise _bad_request(
                f"input {tensor.name!r}: data must be numbers, flat or nested as "
                f"[N][{width}]: {exc}"
            ) from None
        if len(nested) != rows:
            raise _bad_request(
                f"input {tensor.name!r}: data has {len(nested)} rows but shape {tensor.shape} "
                f"says {rows}"
            ) from None
        return nested
    if len(flat) != rows * width:
        raise _bad_request(
            f"input {tensor.name!r}: data has {len(flat)} values but shape {tensor.shape} "
            f"needs {rows * width}"
        )
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def encode_response(
    service: InferenceService,
    name: str,
    request_id: str | None,
    outputs: list[tuple[str, bool]],
    probabilities: FloatArray,
) -> V2Response:
    """出力を JSON（data）またはバイナリ部（binary_data_size）にする。"""
    rows, classes = probabilities.shape
    proba_type = _MODEL_DATATYPES.get(service.classifier.signature.output_type, "FP32")
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output, binary in outputs:
        entry: dict[str, Any]
        if output == PROBABILITIES:
            values = probabilities.astype(_INPUT_DTYPES[proba_type], copy=False)
            entry = {"name": output, "datatype": proba_type, "shape": [rows, classes]}
            raw = values.tobytes() if binary else None
            data: Any = values.astype(np.float64).ravel()  # シードの /predict と同じ数値
        else:
            labels = service.classifier.labels_of(probabilities)
            entry = {"name": output, "datatype": "BYTES", "shape": [rows]}
            raw = _serialize_bytes(labels) if binary else None
            data = labels
        if raw is None:
            entry["data"] = data
        else:
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        entries.append(entry)
    header: dict[str, Any] = {"model_name": name, "model_version": MODEL_VERSION}
    if request_id is not None:
        header["id"] = request_id
    header["outputs"] = entries
    json_part = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return V2Response(200, json_part)
    return V2Response(200, json_part + b"".join(chunks), header_length=len(json_part))


def _serialize_bytes(values: list[str]) -> bytes:
    """BYTES テンソルのバイナリ形式（要素ごとに 4 バイト LE の長さ + 本体）。"""
    parts: list[bytes] = []
    for value in values:
        encoded = value.encode()
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def infer(
    service: InferenceService, name: str, body: bytes, header_length: int | None
) -> V2Response:
    """推論の本体（HTTP の読み書き以外すべて）。"""
    json_part, binary = split_body(body, header_length)
    request = decode_request(json_part)
    outputs = requested_outputs(request)
    features = features_of(service, request, binary)
    probabilities = service.predict(features)
    return encode_response(service, name, request.id, outputs, probabilities)


def _without_content_type(scope: Scope) -> Scope:
    """read_body の上限確認だけを使う（Content-Type は header_length_of で確かめ済み）。"""
    return {"headers": [h for h in scope["headers"] if h[0] != b"content-type"]}


class V2Infer:
    """推論エンドポイント（ASGI）。V2Dispatcher と FastAPI のルートの両方から呼ばれる。"""

    def __init__(self, state: ServerState, model_name: str, max_body: int) -> None:
        self.state = state
        self.model_name = model_name
        self.max_body = max_body

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> int:
        """1 リクエストを処理して送ったステータスを返す。"""
        try:
            service = lookup(self.state, self.model_name, name, version)
            header_length = header_length_of(scope["headers"])
            body = await read_body(_without_content_type(scope), receive, self.max_body)
            response = infer(service, name, body, header_length)
        except ModelServerError as exc:
            response = V2Response(*_error(exc))
        except ClientDisconnectedError:
            return 499
        except Exception:
            logger.exception("unhandled error on V2 infer for %s", name)
            response = V2Response(500, _INTERNAL_ERROR)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response.headers(),
            }
        )
        await send({"type": "http.response.body", "body": response.body})
        return response.status


class V2Dispatcher:
    """設定されたモデルの推論パス（完全一致）を FastAPI より先に処理する純粋な ASGI 層。"""

    def __init__(self, app: ASGIApp, state: ServerState, settings: Settings) -> None:
        name = settings.resolved_model_name
        self.app = app
        self.infer = V2Infer(state, name, settings.max_body_bytes)
        self.paths: dict[str, tuple[str, str | None]] = {
            f"/v2/models/{name}/infer": (name, None),
            f"/v2/models/{name}/versions/{MODEL_VERSION}/infer": (name, MODEL_VERSION),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI エントリポイント。"""
        if scope["type"] == "http" and scope["method"] == "POST":
            target = self.paths.get(scope["path"])
            if target is not None:
                # メトリクスのラベル（HotPathDispatcher は scope["route"].path を読む）
                scope["route"] = _INFER_ROUTE if target[1] is None else _VERSION_INFER_ROUTE
                await self.infer(scope, receive, send, *target)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class _RouteName:
    path: str


_INFER_ROUTE = _RouteName("/v2/models/{model_name}/infer")
_VERSION_INFER_ROUTE = _RouteName("/v2/models/{model_name}/versions/{model_version}/infer")


# --- FastAPI への登録（他のモデル名と OpenAPI ドキュメント） ---


class _InferResponse(Response):
    """FastAPI のルートから V2Infer を実行する応答。"""

    def __init__(self, infer: V2Infer, name: str, version: str | None) -> None:
        self.infer = infer
        self.name = name
        self.version = version
        self.background: BackgroundTask | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI として応答する。"""
        await self.infer(scope, receive, send, self.name, self.version)


def _json(result: tuple[int, bytes]) -> Response:
    status, body = result
    return Response(body, status_code=status, media_type="application/json")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "リクエストが不正（形・型・データ長・出力名など）",
        404: "モデル（またはその版）が無い",
        413: "ボディが上限を超えた",
        415: "Content-Type が JSON でもバイナリでもない、または圧縮されている",
        503: "モデルがまだ（または既に）準備できていない",
    }
    return {code: {"model": types.ErrorResponse, "description": reasons[code]} for code in codes}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic の $defs 参照を展開する（openapi_extra に埋め込むため）。"""
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    result: dict[str, Any] = resolve(schema)
    return result


def _infer_openapi() -> dict[str, Any]:
    schema = _inline_refs(types.InferenceRequest.model_json_schema())
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


def register_v2_routes(api: FastAPI, state: ServerState, settings: Settings) -> None:
    """V2 のルートを FastAPI に登録する（設定されたモデルは高速経路が先に受ける）。"""
    configured = settings.resolved_model_name
    name = PathParam(description="モデル名", openapi_examples={"configured": {"value": configured}})
    version = PathParam(
        description="モデルの版", openapi_examples={"only": {"value": MODEL_VERSION}}
    )
    infer_endpoint = V2Infer(state, configured, settings.max_body_bytes)

    async def get_model_metadata(model_name: str = name) -> Response:
        """モデルのメタデータ（入出力の名前・型・形）"""
        return _json(model_metadata(state, configured, model_name, None))

    async def get_model_version_metadata(
        model_name: str = name, model_version: str = version
    ) -> Response:
        """モデルの版のメタデータ"""
        return _json(model_metadata(state, configured, model_name, model_version))

    async def get_model_ready(model_name: str = name) -> Response:
        """モデルの readiness"""
        return _json(model_ready(state, configured, model_name, None))

    async def get_model_version_ready(
        model_name: str = name, model_version: str = version
    ) -> Response:
        """モデルの版の readiness"""
        return _json(model_ready(state, configured, model_name, model_version))

    async def model_infer(model_name: str = name) -> Response:
        """推論（JSON、またはバイナリテンソル拡張）。出力は probabilities [N, C] と label [N]。"""
        return _InferResponse(infer_endpoint, model_name, None)

    async def model_version_infer(model_name: str = name, model_version: str = version) -> Response:
        """版を指定した推論（JSON、またはバイナリテンソル拡張）。"""
        return _InferResponse(infer_endpoint, model_name, model_version)

    base = "/v2/models/{model_name}"
    versioned = base + "/versions/{model_version}"
    gets: list[tuple[str, Any, type[BaseModel], tuple[int, ...]]] = [
        ("/v2", _exact_endpoint(server_metadata, state), types.ServerMetadataResponse, ()),
        ("/v2/health/live", _exact_endpoint(server_live, state), types.LiveResponse, ()),
        ("/v2/health/ready", _exact_endpoint(server_ready, state), types.ReadyResponse, (503,)),
        (base, get_model_metadata, types.ModelMetadataResponse, (404, 503)),
        (versioned, get_model_version_metadata, types.ModelMetadataResponse, (404, 503)),
        (base + "/ready", get_model_ready, types.ReadyResponse, (404, 503)),
        (versioned + "/ready", get_model_version_ready, types.ReadyResponse, (404, 503)),
    ]
    for path, endpoint, model, codes in gets:
        _add(api, path, "GET", endpoint, model, _errors(*codes))
    responses = {**_BINARY_RESPONSE, **_errors(400, 404, 413, 415, 503)}
    for path, endpoint in (
        (base + "/infer", model_infer),
        (versioned + "/infer", model_version_infer),
    ):
        _add(api, path, "POST", endpoint, types.InferenceResponse, responses, _infer_openapi())


_BINARY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "推論結果。バイナリ出力を要求した場合は application/octet-stream："
        "JSON 部の長さが Inference-Header-Content-Length ヘッダにあり、その後にバイナリ部が続く。",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _add(
    api: FastAPI,
    path: str,
    method: str,
    endpoint: Any,
    model: type[BaseModel],
    responses: dict[int | str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> None:
    doc: str = endpoint.__doc__ or ""
    api.add_api_route(
        path,
        endpoint,
        methods=[method],
        response_model=model,
        responses=responses,
        summary=doc.split("（", maxsplit=1)[0].split("：", maxsplit=1)[0].rstrip("。"),
        description=doc,
        tags=["v2"],
        operation_id=f"v2_{endpoint.__name__}",
        openapi_extra=extra,
    )


def _exact_endpoint(handler: Handler, state: ServerState) -> Any:
    async def endpoint() -> Response:
        return _json(handler(state, b""))

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint
