"""Open Inference Protocol（V2）の gRPC のワイヤー形式：ModelInferRequest ⇄ 配列、応答の組み立て。

型の表・入力の規則（1 入力、FP32/FP64、[N, 幅]）・出力の選択・出力テンソルは codecs.v2（REST）と
共通。gRPC に固有なのは、型付きの contents（fp32_contents など）と raw_input_contents /
raw_output_contents、parameters が InferParameter であることだけ。
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np

from model_in_image.api.grpc_v2._generated import grpc_predict_v2_pb2 as pb
from model_in_image.codecs import v2
from model_in_image.dataplane import SMALL_INPUT_VALUES, DataPlane
from model_in_image.runtime import FloatArray
from model_in_image.state import MODEL_VERSION

# V2 の型ごとに、値を入れる InferTensorContents のフィールド
CONTENTS_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
# V2 の raw はリトルエンディアン：そのまま memoryview で読めるのはリトルエンディアンの機械だけ
_NATIVE_LITTLE_ENDIAN = sys.byteorder == "little"
_FORMAT: dict[str, Literal["f", "d"]] = {"f": "f", "d": "d"}  # numpy の型の文字 → memoryview の形式


def features_of(dataplane: DataPlane, request: pb.ModelInferRequest) -> FloatArray:
    """入力テンソルを検証済みの [N, 幅] 配列にする（規則は REST・シード API と同じ）。"""
    tensor = v2.single_input(request.inputs)
    width = dataplane.input_width
    dtype = v2.check_input(tensor.name, tensor.datatype, tensor.shape, width)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise v2.bad_request(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for "
                f"{len(request.inputs)} inputs"
            )
        if tensor.HasField("contents"):
            raise v2.bad_request(f"input {tensor.name!r} has both contents and raw_input_contents")
        rows = _raw_rows(tensor, dtype, width, request.raw_input_contents[0])
        return dataplane.validate(rows, loc=("raw_input_contents", 0))
    return dataplane.validate(_typed_rows(tensor, width), loc=("inputs", 0, "contents"))


def _raw_rows(
    tensor: pb.ModelInferRequest.InferInputTensor, dtype: np.dtype[Any], width: int, raw: bytes
) -> Sequence[Sequence[float]]:
    """raw_input_contents を行にする（コピーは検証の 1 回だけ）。

    小さな入力は Python の float の行にする（検証が numpy を通らない：dataplane の
    SMALL_INPUT_VALUES）。大きな入力は np.frombuffer の [N, 幅] のビュー（行のリストにすると
    行の数だけ配列ができ、それをまた 1 つの配列に戻すことになる）。
    """
    rows = tensor.shape[0]
    count = rows * width
    if len(raw) != count * dtype.itemsize:
        raise v2.bad_request(
            f"input {tensor.name!r}: {len(raw)} bytes of binary data, but shape "
            f"{list(tensor.shape)} of {tensor.datatype} needs {count * dtype.itemsize}"
        )
    if count > SMALL_INPUT_VALUES or not _NATIVE_LITTLE_ENDIAN:
        array: Any = np.frombuffer(raw, dtype=dtype).reshape(rows, width)  # validate は配列も受ける
        return cast("Sequence[Sequence[float]]", array)
    flat: Sequence[float] = memoryview(raw).cast(_FORMAT[dtype.char]).tolist()
    return [flat[i : i + width] for i in range(0, count, width)]


def _typed_rows(
    tensor: pb.ModelInferRequest.InferInputTensor, width: int
) -> Sequence[Sequence[float]]:
    """型付きの contents（FP32 は fp32_contents、FP64 は fp64_contents）を行にする。"""
    field = CONTENTS_FIELD[tensor.datatype]
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise v2.bad_request(
            f"input {tensor.name!r}: {tensor.datatype} values go in contents.{field}, "
            f"not {', '.join(others)}"
        )
    values = list(getattr(tensor.contents, field))
    rows = tensor.shape[0]
    if len(values) != rows * width:
        raise v2.bad_request(
            f"input {tensor.name!r}: contents.{field} has {len(values)} values but shape "
            f"{list(tensor.shape)} needs {rows * width}"
        )
    return [values[i : i + width] for i in range(0, len(values), width)]


def requested_outputs(request: pb.ModelInferRequest) -> list[tuple[str, bool]]:
    """返す出力の (名前, raw か)。

    既定は入力と同じ表現（raw_input_contents なら raw、KServe と同じ）。parameters の
    binary_data_output（リクエスト全体）と binary_data（出力ごと）で変えられる。
    """
    default_raw = _bool_parameter(request.parameters, BINARY_DATA_OUTPUT)
    if default_raw is None:
        default_raw = bool(request.raw_input_contents)
    requested = [(o.name, _bool_parameter(o.parameters, BINARY_DATA)) for o in request.outputs]
    return v2.select_outputs(requested or None, default_raw)


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
    probabilities: FloatArray,
) -> pb.ModelInferResponse:
    """出力を型付きの contents か raw_output_contents にする。

    仕様上 raw_output_contents は全出力に対して使うか、どれにも使わないかのどちらか：
    1 つでも raw を求められたら全出力を raw にする。
    """
    response = pb.ModelInferResponse(
        model_name=dataplane.model_name, model_version=MODEL_VERSION, id=request_id
    )
    raw = any(binary for _, binary in outputs)
    for tensor in v2.output_tensors(dataplane, outputs, probabilities):
        entry = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if raw:
            response.raw_output_contents.append(tensor.raw())
        elif isinstance(tensor.values, list):
            entry.contents.bytes_contents.extend(label.encode() for label in tensor.values)
        else:
            contents = getattr(entry.contents, CONTENTS_FIELD[tensor.datatype])
            contents.extend(tensor.values.ravel().tolist())
    return response


def model_metadata(dataplane: DataPlane, platform: str) -> pb.ModelMetadataResponse:
    """モデルのメタデータ（REST の /v2/models/{name} と同じ内容）。"""
    metadata: dict[str, Any] = v2.model_metadata(dataplane, platform)
    return pb.ModelMetadataResponse(**metadata)
