"""Open Inference Protocol（V2）の gRPC のワイヤー形式：ModelInferRequest ⇄ 配列、応答の組み立て。

型の表・入力の規則（1 入力、FP32/FP64、[N, 幅]）・出力の選択・出力テンソルは codecs.v2（REST）と
共通。gRPC に固有なのは、型付きの contents（fp32_contents など）と raw_input_contents /
raw_output_contents、parameters が InferParameter であることだけ。
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod
from typing import Any

import numpy as np

from model_in_image.codecs import v2
from model_in_image.codecs.v2_classification import grpc_count
from model_in_image.dataplane import DataPlane
from model_in_image.model.onnx_model import Feeds
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb
from model_in_image.state import MODEL_VERSION

BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"


# V2 の型ごとに、値を入れる InferTensorContents のフィールド（gRPC の型付きの contents）
TYPED_FIELDS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "FP16": None,
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "INT16": "int_contents",
    "INT8": "int_contents",
    "UINT8": "uint_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}


# raw_input_contents の速い経路の型（リトルエンディアンの float32）
_FP32 = np.dtype("<f4")


def feeds_of(dataplane: DataPlane, request: pb.ModelInferRequest) -> Feeds:
    """入力テンソルを検証済みのモデルの入力にする（規則は REST・シード API と同じ）。"""
    raw = request.raw_input_contents
    if len(raw) == 1 and len(request.inputs) == 1:
        fast = _raw_fp32(dataplane, request.inputs[0], raw[0])
        if fast is not None:
            return fast
    pairs = v2.match_inputs(dataplane, request.inputs)
    if raw and len(raw) != len(request.inputs):
        raise v2.bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    position = {id(tensor): i for i, tensor in enumerate(request.inputs)}
    values: list[Any] = []
    for spec, tensor in pairs:
        v2.check_input(tensor.name, tensor.datatype, tensor.shape, spec)
        if raw:
            if tensor.HasField("contents"):
                raise v2.bad_request(
                    f"input {tensor.name!r} has both contents and raw_input_contents"
                )
            part = raw[position[id(tensor)]]
            values.append(v2.raw_values(tensor.name, tensor.datatype, tensor.shape, part))
        else:
            values.append(_typed_values(tensor))
    if raw:
        return v2.build_feeds(dataplane, pairs, values, ("raw_input_contents",), ())
    return v2.build_feeds(dataplane, pairs, values, ("inputs",), ("contents",))


def _raw_fp32(
    dataplane: DataPlane, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes
) -> Feeds | None:
    """速い経路：[N, 幅] の FP32 の raw を float32 のモデルへコピーなしで渡す（np.frombuffer）。

    型・形・行数・バイト数が合い、値がすべて有限のときだけ。それ以外は None を返し、一般の
    経路（feeds_of の残り）が同じ規則で確かめて、同じ誤りの文面と場所で断る。
    """
    width = dataplane.input_width
    spec = dataplane.model.signature.inputs[0]
    shape = tensor.shape
    if (
        width is None
        or tensor.datatype != "FP32"
        or spec.dtype != _FP32
        or len(shape) != 2
        or len(spec.shape) != 2
        or shape[1] != width
        or not 1 <= shape[0] <= dataplane.limits.max_rows
        or len(raw) != shape[0] * width * 4
        or tensor.HasField("contents")
    ):
        return None
    array = np.frombuffer(raw, dtype=_FP32).reshape(shape[0], width)
    if not np.isfinite(array).all():  # float32 の範囲 = 有限（NaN・inf は一般の経路で断る）
        return None
    return {spec.name: array}


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> Any:
    """型付きの contents（FP32 は fp32_contents など）を shape の配列にする。"""
    field = TYPED_FIELDS.get(tensor.datatype)
    if field is None:
        raise v2.bad_request(
            f"input {tensor.name!r}: {tensor.datatype} has no typed contents; "
            "use raw_input_contents"
        )
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise v2.bad_request(
            f"input {tensor.name!r}: {tensor.datatype} values go in contents.{field}, "
            f"not {', '.join(others)}"
        )
    values: list[Any] = list(getattr(tensor.contents, field))
    if field == "bytes_contents":
        try:
            values = [v.decode() for v in values]
        except UnicodeDecodeError:
            raise v2.bad_request(f"input {tensor.name!r}: BYTES element is not UTF-8") from None
    if tensor.datatype in ("FP32", "FP64"):  # 型は protobuf が保証：速い経路のために数の配列に
        shape = list(tensor.shape)
        count = prod(shape)
        if len(values) != count:
            raise v2.bad_request(
                f"input {tensor.name!r}: contents.{field} has {len(values)} values but shape "
                f"{shape} needs {count}"
            )
        return np.array(values, dtype=np.float64).reshape(shape)
    return v2.shaped(tensor.name, values, tensor.shape)


def requested_outputs(
    request: pb.ModelInferRequest, names: Sequence[str], available: Sequence[str] | None = None
) -> list[tuple[str, bool]]:
    """返す出力の (名前, raw か)。

    既定は入力と同じ表現（raw_input_contents なら raw、KServe と同じ）。parameters の
    binary_data_output（リクエスト全体）と binary_data（出力ごと）で変えられる。出力ごとの
    classification（int64_param）は分類拡張の k。
    """
    default_raw = _bool_parameter(request.parameters, BINARY_DATA_OUTPUT)
    if default_raw is None:
        default_raw = bool(request.raw_input_contents)
    requested = [
        (o.name, _bool_parameter(o.parameters, BINARY_DATA), grpc_count(o.name, o.parameters))
        for o in request.outputs
    ]
    return v2.select_outputs(requested or None, default_raw, names, available)


def _bool_parameter(parameters: Mapping[str, pb.InferParameter], key: str) -> bool | None:
    """真偽値の parameter（無ければ None、型違いは 400）。知らない parameter は読まない。"""
    if key not in parameters:  # 添字で読むと空の値が足されるので先に確かめる
        return None
    value = parameters[key]
    if value.WhichOneof("parameter_choice") != "bool_param":
        raise v2.bad_request(f"parameter {key!r} must be a bool_param")
    return value.bool_param


def encode_response(
    dataplane: DataPlane,
    request_id: str,
    outputs: list[tuple[str, bool]],
    tensors: list[v2.OutputTensor],
) -> pb.ModelInferResponse:
    """出力を型付きの contents か raw_output_contents にする。

    仕様上 raw_output_contents は全出力に対して使うか、どれにも使わないかのどちらか：
    1 つでも raw を求められたら全出力を raw にする。
    """
    response = pb.ModelInferResponse(
        model_name=dataplane.model_name, model_version=MODEL_VERSION, id=request_id
    )
    raw = any(binary for _, binary in outputs)
    for tensor in tensors:
        entry = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if raw:
            response.raw_output_contents.append(tensor.raw())
        elif isinstance(tensor.values, list):
            entry.contents.bytes_contents.extend(label.encode() for label in tensor.values)
        else:
            field = TYPED_FIELDS.get(tensor.datatype) or "fp32_contents"
            values = (
                tensor.values.astype(np.float32) if tensor.datatype == "FP16" else tensor.values
            )
            getattr(entry.contents, field).extend(values.ravel().tolist())
    return response


def model_metadata(
    dataplane: DataPlane, catalog: v2.OutputCatalog, platform: str
) -> pb.ModelMetadataResponse:
    """モデルのメタデータ（REST の /v2/models/{name} と同じ内容）。"""
    metadata: dict[str, Any] = v2.model_metadata(dataplane, catalog, platform)
    return pb.ModelMetadataResponse(**metadata)
