"""Open Inference Protocol (V2) のワイヤー形式：推論リクエスト ⇄ 配列、応答の直列化。

JSON の data（平らな形・入れ子の形）とバイナリテンソル拡張（binary_data_size）を扱う。
HTTP のヘッダ（Inference-Header-Content-Length など）は api/v2 が読む。
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Annotated, Any, Protocol, TypeVar

import msgspec
import numpy as np

from model_in_image.codecs.decode import decode_json
from model_in_image.codecs.v2_classification import RequestedOutput, parse_count

# 出力の側（codecs.v2_outputs）も codecs.v2 から使えるようにする
from model_in_image.codecs.v2_outputs import (
    DATATYPE_TO_NUMPY,
    LABEL,
    NUMPY_TO_DATATYPE,
    PROBABILITIES,
    EncodedResponse,
    OutputCatalog,
    OutputTensor,
    datatype_of,
    encode_response,
    model_metadata,
    serialize_bytes,
    tensor_of,
)
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelServerError
from model_in_image.model.inputs import check_count
from model_in_image.model.inputs import tensor as to_tensor
from model_in_image.model.onnx_model import Feeds
from model_in_image.model.signature import TensorSpec

__all__ = [
    "DATATYPE_TO_NUMPY",
    "LABEL",
    "NUMPY_TO_DATATYPE",
    "PROBABILITIES",
    "EncodedResponse",
    "OutputCatalog",
    "OutputTensor",
    "datatype_of",
    "encode_response",
    "model_metadata",
    "serialize_bytes",
    "tensor_of",
]

# 入力の型に代えて受け付ける V2 の型（同じ種類の数。値の範囲はシグネチャの規則で確かめる）
_COMPATIBLE = {
    "f": {"FP32", "FP64", "FP16"},
    "i": {"INT64", "INT32", "INT16", "INT8", "UINT8"},
    "u": {"UINT8"},
    "b": {"BOOL"},
    "O": {"BYTES"},
}

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
    """要求する出力の parameters（classification は Triton の分類拡張の k）。"""

    binary_data: bool | None = None
    classification: Any = msgspec.UNSET


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
_ANY = msgspec.json.Decoder(list[Any])


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


def requested_outputs(
    request: WireRequest, names: Sequence[str], available: Sequence[str] | None = None
) -> list[tuple[str, bool]]:
    """返す出力の (名前, バイナリか)。outputs が無ければ既定の出力（names）。"""
    default_binary = request.parameters.binary_data_output if request.parameters else False
    requested = None
    if request.outputs:
        requested = [_wire_output(o.name, o.parameters) for o in request.outputs]
    return select_outputs(requested, default_binary, names, available)


def _wire_output(name: str, params: OutputParameters | None) -> tuple[str, bool | None, int | None]:
    if params is None:
        return name, None, None
    unset = params.classification is msgspec.UNSET
    return name, params.binary_data, None if unset else parse_count(name, params.classification)


def select_outputs(
    requested: Sequence[tuple[str, bool | None, int | None]] | None,
    default_binary: bool,
    names: Sequence[str],
    available: Sequence[str] | None = None,
) -> list[tuple[str, bool]]:
    """要求された (名前, binary_data, 分類の k) から返す出力を決める（REST と gRPC 共通）。

    無ければ既定の出力（names）。求められる名前は available（省略時は names）。
    """
    if not requested:
        return [(name, default_binary) for name in names]
    allowed = names if available is None else available
    selected: list[tuple[str, bool]] = []
    for name, flag, count in requested:
        if name not in allowed:
            raise bad_request(f"unknown output: {name!r} (the model has {', '.join(allowed)})")
        if any(name == chosen for chosen, _ in selected):
            raise bad_request(f"output {name!r} is requested twice")
        binary = default_binary if flag is None else flag
        selected.append((name, binary) if count is None else RequestedOutput(name, binary, count))
    return selected


def feeds_of(dataplane: DataPlane, request: WireRequest, binary: bytes | None) -> Feeds:
    """入力テンソルを検証済みのモデルの入力にする（規則はシード API と同じ）。"""
    pairs = match_inputs(dataplane, request.inputs)
    sizes = [t.parameters.binary_data_size if t.parameters else None for _, t in pairs]
    if any(size is not None for size in sizes):
        if binary is None:
            raise bad_request("binary_data_size needs the Inference-Header-Content-Length header")
        declared = sum(size or 0 for size in sizes)
        if declared != len(binary):
            raise bad_request(
                f"binary_data_size of the inputs adds up to {declared} but the binary data has "
                f"{len(binary)} bytes"
            )
    elif binary:
        raise bad_request("the body has binary data but no input declares binary_data_size")
    offset = 0
    values: list[Any] = []
    for (spec, wire), size in zip(pairs, sizes, strict=True):
        check_input(wire.name, wire.datatype, wire.shape, spec)
        if size is not None:
            if wire.data is not msgspec.UNSET:
                raise bad_request(f"input {wire.name!r} has both data and binary_data_size")
            assert binary is not None
            values.append(
                raw_values(wire.name, wire.datatype, wire.shape, binary[offset : offset + size])
            )
            offset += size
        else:
            values.append(_json_values(wire))
    return build_feeds(dataplane, pairs, values, ("inputs",))


def match_inputs(dataplane: DataPlane, inputs: Sequence[InputT]) -> list[tuple[TensorSpec, InputT]]:
    """リクエストの入力をモデルの入力に名前で対応させる（1 入力のモデルは名前を問わない）。"""
    specs = dataplane.model.signature.inputs
    if len(specs) == 1:
        if len(inputs) != 1:
            raise bad_request(f"the model has one input; the request has {len(inputs)}")
        return [(specs[0], inputs[0])]
    by_name = {spec.name: spec for spec in specs}
    pairs: list[tuple[TensorSpec, InputT]] = []
    for wire in inputs:
        spec = by_name.get(wire.name)
        if spec is None:
            raise bad_request(
                f"unknown input {wire.name!r}; the model's inputs are {', '.join(by_name)}"
            )
        if any(wire.name == other.name for other, _ in pairs):
            raise bad_request(f"input {wire.name!r} is given twice")
        pairs.append((spec, wire))
    missing = [name for name in by_name if all(name != s.name for s, _ in pairs)]
    if missing:
        raise bad_request(f"missing input {missing[0]!r}; the model needs {', '.join(by_name)}")
    pairs.sort(key=lambda pair: list(by_name).index(pair[0].name))
    return pairs


def check_input(name: str, datatype: str, shape: Sequence[int], spec: TensorSpec) -> None:
    """入力の型と形（[N, ...]、N は 0 以上、固定の次元は一致）を確かめる。"""
    kind = spec.dtype.kind if not spec.is_string else "O"
    if datatype not in _COMPATIBLE[kind]:
        allowed = " or ".join(sorted(_COMPATIBLE[kind]))
        raise bad_request(
            f"input {name!r}: datatype {datatype!r} is not supported for this input "
            f"({spec.element}; use {allowed})"
        )
    expected = spec.row_shape
    fits = len(shape) == len(spec.shape) and all(
        e is None or e == g for e, g in zip(expected, shape[1:], strict=True)
    )
    if not fits:
        dims = ", ".join("-1" if d is None else str(d) for d in spec.shape[:1] + expected)
        dims = ", ".join(["-1", *dims.split(", ")[1:]]) if expected else "-1"
        raise bad_request(
            f"input {name!r}: shape {list(shape)} does not match the model's [{dims}]"
        )


def raw_values(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Any:
    """行優先のバイト列（REST のバイナリ拡張・gRPC の raw_input_contents）を配列にする。"""
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        items = deserialize_bytes(name, raw)
        if len(items) != count:
            raise bad_request(
                f"input {name!r}: {len(items)} BYTES elements, but shape {list(shape)} "
                f"needs {count}"
            )
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = DATATYPE_TO_NUMPY[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise bad_request(
            f"input {name!r}: {len(raw)} bytes of binary data, but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def deserialize_bytes(name: str, raw: bytes) -> list[str]:
    """BYTES テンソルのバイナリ形式（要素ごとに 4 バイト LE の長さ + 本体）を文字列にする。"""
    items: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad_request(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise bad_request(f"input {name!r}: BYTES element runs past the binary data")
        try:
            items.append(raw[offset : offset + length].decode())
        except UnicodeDecodeError:
            raise bad_request(f"input {name!r}: BYTES element is not UTF-8") from None
        offset += length
    return items


def _json_values(wire: WireInput) -> Any:
    """JSON の data（平らな形でも入れ子の形でも）を shape の配列にする。"""
    if isinstance(wire.data, msgspec.UnsetType):
        raise bad_request(f"input {wire.name!r} has no data")
    try:
        data = _ANY.decode(wire.data)
    except msgspec.DecodeError as exc:
        raise bad_request(f"input {wire.name!r}: {exc}") from None
    return shaped(wire.name, data, wire.shape)


def shaped(name: str, data: list[Any], shape: Sequence[int]) -> Any:
    """平らな・入れ子の値を shape の object 配列にする（数が合わなければ 400）。"""
    try:
        array = np.array(data, dtype=object)
    except ValueError:
        raise bad_request(f"input {name!r}: data is ragged") from None
    count = int(np.prod(shape)) if shape else 1
    if array.shape == tuple(shape):
        return array
    if array.size != count or (array.ndim > 1 and array.shape != tuple(shape)):
        raise bad_request(
            f"input {name!r}: data has {array.size} values in shape {list(array.shape)} but "
            f"shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def build_feeds(
    dataplane: DataPlane,
    pairs: Sequence[tuple[TensorSpec, Any]],
    values: Sequence[Any],
    loc: tuple[str | int, ...],
    field: tuple[str, ...] = ("data",),
) -> Feeds:
    """配列を検証してモデルの入力にする（実数 1 入力は速い経路、ほかはシグネチャの規則）。

    誤りの場所は loc + (入力の番号,) + field（REST は data、gRPC は contents か無し）。
    """
    if dataplane.input_width is not None:
        array = values[0]
        if array.dtype == object:
            if not _numbers(array):
                return _checked(dataplane, pairs, values, loc, field)
            array = array.astype(np.float64)
        return dataplane.validate(array, loc=(*loc, 0, *field))
    return _checked(dataplane, pairs, values, loc, field)


def _numbers(array: Any) -> bool:
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in array.ravel().tolist()
    )


def _checked(
    dataplane: DataPlane,
    pairs: Sequence[tuple[TensorSpec, Any]],
    values: Sequence[Any],
    loc: tuple[str | int, ...],
    field: tuple[str, ...],
) -> Feeds:
    feeds: Feeds = {}
    counts = set()
    for i, ((spec, _), array) in enumerate(zip(pairs, values, strict=True)):
        rows = array.tolist()
        check_count(rows, dataplane.limits.max_rows, (*loc, i, *field))
        counts.add(len(rows))
        feeds[spec.name] = to_tensor(rows, spec, (*loc, i, *field))
    if len(counts) > 1:
        raise bad_request(f"inputs disagree on the number of rows: {sorted(counts)}")
    return feeds
