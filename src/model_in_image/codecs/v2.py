"""Open Inference Protocol (V2) のワイヤー形式：推論リクエスト ⇄ 配列、応答の直列化。

JSON の data（平らな形・入れ子の形）とバイナリテンソル拡張（binary_data_size）を扱う。
HTTP のヘッダ（Inference-Header-Content-Length など）は api/v2 が読む。
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

import msgspec
import numpy as np
import orjson

from model_in_image.codecs.decode import decode_json
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelServerError
from model_in_image.runtime import FloatArray
from model_in_image.state import MODEL_VERSION

PROBABILITIES = "probabilities"
LABEL = "label"
OUTPUT_NAMES = (PROBABILITIES, LABEL)

DATATYPE_TO_NUMPY: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
ONNX_TO_DATATYPE = {"tensor(float)": "FP32", "tensor(double)": "FP64"}

# 形の次元とバイト数（大きな整数は文字列にできず 500 になるので、型の段階で 2^31 未満に限る）
NonNegative = Annotated[int, msgspec.Meta(ge=0, lt=2**31)]


class NamedInput(Protocol):
    """名前を持つ入力テンソル（REST の WireInput と gRPC の InferInputTensor）。"""

    @property
    def name(self) -> str: ...


InputT = TypeVar("InputT", bound=NamedInput)


# --- 受信ボディ（msgspec：真偽値を数値として受け付けない厳密な検証） ---


class InputParameters(msgspec.Struct, kw_only=True):
    """入力テンソルの parameters（binary_data_size だけを解釈する）。"""

    binary_data_size: NonNegative | None = None


class OutputParameters(msgspec.Struct, kw_only=True):
    """要求する出力の parameters。"""

    binary_data: bool | None = None


class RequestParameters(msgspec.Struct, kw_only=True):
    """リクエスト全体の parameters。"""

    binary_data_output: bool = False


class WireInput(msgspec.Struct, kw_only=True):
    """入力テンソル。data は後で平らな形・入れ子の形のどちらとしても解析する。"""

    name: str
    shape: list[NonNegative]
    datatype: str
    parameters: InputParameters | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class WireOutput(msgspec.Struct, kw_only=True):
    """要求する出力。"""

    name: str
    parameters: OutputParameters | None = None


class WireRequest(msgspec.Struct, kw_only=True):
    """推論リクエスト（JSON 部）。"""

    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[WireInput]
    outputs: list[WireOutput] | None = None


_REQUEST = msgspec.json.Decoder(WireRequest)
_FLAT = msgspec.json.Decoder(list[float])
_NESTED = msgspec.json.Decoder(list[list[float]])


def bad_request(message: str) -> ModelServerError:
    """400 の誤り。"""
    return ModelServerError(message, status_code=400)


def error_message(exc: ModelServerError) -> str:
    """V2 の誤りの文（入力の検証エラーには場所を添える。REST と gRPC 共通）。"""
    if isinstance(exc, InvalidInputError):
        where = ".".join(str(part) for part in exc.errors[0]["loc"]) if exc.errors else "input"
        return f"{where}: {exc.message}"
    return exc.message


def split_body(body: bytes, header_length: int | None) -> tuple[bytes, bytes | None]:
    """ボディを JSON 部とバイナリ部に分ける。"""
    if header_length is None:
        return body, None
    if header_length > len(body):
        raise bad_request(
            f"Inference-Header-Content-Length {header_length} exceeds the body ({len(body)} bytes)"
        )
    return body[:header_length], body[header_length:]


def decode_request(json_part: bytes) -> WireRequest:
    """JSON 部を型検証しながら解析する。"""
    try:
        return decode_json(_REQUEST, json_part, prefix="invalid JSON")
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid inference request: {exc}") from None


def requested_outputs(request: WireRequest) -> list[tuple[str, bool]]:
    """返す出力の (名前, バイナリか)。outputs が無ければ全出力。"""
    default_binary = request.parameters.binary_data_output if request.parameters else False
    requested = None
    if request.outputs:
        requested = [
            (o.name, o.parameters.binary_data if o.parameters else None) for o in request.outputs
        ]
    return select_outputs(requested, default_binary)


def select_outputs(
    requested: Sequence[tuple[str, bool | None]] | None, default_binary: bool
) -> list[tuple[str, bool]]:
    """要求された (名前, binary_data) から返す出力を決める（無ければ全出力、REST と gRPC 共通）。"""
    if not requested:
        return [(name, default_binary) for name in OUTPUT_NAMES]
    selected: list[tuple[str, bool]] = []
    for name, flag in requested:
        if name not in OUTPUT_NAMES:
            raise bad_request(f"unknown output: {name!r} (the model has {', '.join(OUTPUT_NAMES)})")
        if any(name == chosen for chosen, _ in selected):
            raise bad_request(f"output {name!r} is requested twice")
        selected.append((name, default_binary if flag is None else flag))
    return selected


def features_of(dataplane: DataPlane, request: WireRequest, binary: bytes | None) -> FloatArray:
    """入力テンソルを検証済みの [N, 幅] 配列にする（規則はシード API と同じ）。"""
    tensor = single_input(request.inputs)
    width = dataplane.input_width
    dtype = check_input(tensor.name, tensor.datatype, tensor.shape, width)
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        if tensor.data is not msgspec.UNSET:
            raise bad_request(f"input {tensor.name!r} has both data and binary_data_size")
        if binary is None:
            raise bad_request("binary_data_size needs the Inference-Header-Content-Length header")
        if size != len(binary):
            raise bad_request(
                f"input {tensor.name!r}: binary_data_size is {size} but the binary data has "
                f"{len(binary)} bytes"
            )
        rows = raw_rows(tensor.name, tensor.datatype, dtype, tensor.shape, binary, width)
    else:
        if binary:
            raise bad_request("the body has binary data but no input declares binary_data_size")
        rows = _json_rows(tensor, width)
    return dataplane.validate(rows, loc=("inputs", 0, "data"))


def single_input(inputs: Sequence[InputT]) -> InputT:
    """モデルの入力は 1 つ（REST と gRPC 共通）。"""
    if len(inputs) != 1:
        raise bad_request(f"the model has one input; the request has {len(inputs)}")
    return inputs[0]


def check_input(name: str, datatype: str, shape: Sequence[int], width: int) -> np.dtype[Any]:
    """入力の型（FP32 か FP64）と形（[N, 幅]、N は 0 以上）を確かめ、numpy の型を返す。"""
    dtype = DATATYPE_TO_NUMPY.get(datatype)
    if dtype is None:
        raise bad_request(
            f"input {name!r}: datatype {datatype!r} is not supported (use FP32 or FP64)"
        )
    if len(shape) != 2 or shape[0] < 0 or shape[1] != width:
        raise bad_request(
            f"input {name!r}: shape {list(shape)} does not match the model's [-1, {width}]"
        )
    return dtype


def raw_rows(
    name: str, datatype: str, dtype: np.dtype[Any], shape: Sequence[int], raw: bytes, width: int
) -> Sequence[Sequence[float]]:
    """行優先のバイト列（REST のバイナリ拡張・gRPC の raw_input_contents）を行にする。"""
    rows = shape[0]
    expected = rows * width * dtype.itemsize
    if len(raw) != expected:
        raise bad_request(
            f"input {name!r}: {len(raw)} bytes of binary data, but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return list(np.frombuffer(raw, dtype=dtype).reshape(rows, width))


def _json_rows(tensor: WireInput, width: int) -> Sequence[Sequence[float]]:
    if isinstance(tensor.data, msgspec.UnsetType):
        raise bad_request(f"input {tensor.name!r} has no data")
    rows = tensor.shape[0]
    try:
        flat = _FLAT.decode(tensor.data)
    except msgspec.ValidationError:
        try:
            nested = _NESTED.decode(tensor.data)
        except msgspec.ValidationError as exc:
            raise bad_request(
                f"input {tensor.name!r}: data must be numbers, flat or nested as "
                f"[N][{width}]: {exc}"
            ) from None
        if len(nested) != rows:
            raise bad_request(
                f"input {tensor.name!r}: data has {len(nested)} rows but shape {tensor.shape} "
                f"says {rows}"
            ) from None
        return nested
    if len(flat) != rows * width:
        raise bad_request(
            f"input {tensor.name!r}: data has {len(flat)} values but shape {tensor.shape} "
            f"needs {rows * width}"
        )
    return [flat[i : i + width] for i in range(0, len(flat), width)]


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """推論の応答。binary が空でなければ JSON 部の後に続ける（header_length は JSON 部の長さ）。"""

    json_part: bytes
    binary: bytes = b""


def probability_datatype(dataplane: DataPlane) -> str:
    """確率出力の V2 の型。"""
    return ONNX_TO_DATATYPE.get(dataplane.classifier.signature.output_type, "FP32")


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """出力テンソル 1 つ：確率（数値の配列）かラベル（文字列のリスト）。REST と gRPC 共通。"""

    name: str
    datatype: str
    shape: list[int]
    values: FloatArray | list[str]

    def raw(self) -> bytes:
        """行優先のバイト列（BYTES は要素ごとに長さ + 本体）。"""
        if isinstance(self.values, list):
            return serialize_bytes(self.values)
        return self.values.tobytes()


def output_tensors(
    dataplane: DataPlane, outputs: list[tuple[str, bool]], probabilities: FloatArray
) -> list[OutputTensor]:
    """要求された出力を順に作る（確率は V2 の型に変換、ラベルは最尤クラスの名前）。"""
    tensors: list[OutputTensor] = []
    for name, _ in outputs:
        if name == PROBABILITIES:
            datatype = probability_datatype(dataplane)
            values = probabilities.astype(DATATYPE_TO_NUMPY[datatype], copy=False)
            tensors.append(OutputTensor(name, datatype, list(probabilities.shape), values))
        else:
            labels = dataplane.labels_of(probabilities)
            tensors.append(OutputTensor(name, "BYTES", [len(labels)], labels))
    return tensors


def encode_response(
    dataplane: DataPlane,
    request_id: str | None,
    outputs: list[tuple[str, bool]],
    probabilities: FloatArray,
) -> EncodedResponse:
    """出力を JSON（data）またはバイナリ部（binary_data_size）にする。"""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    tensors = output_tensors(dataplane, outputs, probabilities)
    for tensor, (_, binary) in zip(tensors, outputs, strict=True):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if binary:
            raw = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif isinstance(tensor.values, list):
            entry["data"] = tensor.values
        else:
            entry["data"] = tensor.values.astype(np.float64).ravel()  # シードの /predict と同じ数値
        entries.append(entry)
    header: dict[str, Any] = {"model_name": dataplane.model_name, "model_version": MODEL_VERSION}
    if request_id is not None:
        header["id"] = request_id
    header["outputs"] = entries
    return EncodedResponse(
        orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY), b"".join(chunks)
    )


def serialize_bytes(values: list[str]) -> bytes:
    """BYTES テンソルのバイナリ形式（要素ごとに 4 バイト LE の長さ + 本体）。"""
    parts: list[bytes] = []
    for value in values:
        encoded = value.encode()
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def model_metadata(dataplane: DataPlane, platform: str) -> dict[str, Any]:
    """モデルのメタデータ（入出力の名前・V2 の型・形。-1 はバッチ次元）。"""
    sig = dataplane.classifier.signature
    return {
        "name": dataplane.model_name,
        "versions": [MODEL_VERSION],
        "platform": platform,
        "inputs": [
            {
                "name": sig.input_name,
                "datatype": ONNX_TO_DATATYPE[sig.input_type],
                "shape": [-1, sig.input_width],
            }
        ],
        "outputs": [
            {
                "name": PROBABILITIES,
                "datatype": probability_datatype(dataplane),
                "shape": [-1, sig.num_classes],
            },
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
        ],
    }
