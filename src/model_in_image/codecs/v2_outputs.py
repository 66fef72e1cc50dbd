"""Open Inference Protocol (V2) の出力：出力の一覧（OutputCatalog）、テンソル、応答とメタデータ。

REST（codecs.v2）と gRPC（codecs.v2_grpc）が共通に使う。
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from model_in_image.dataplane import DataPlane
from model_in_image.model.onnx_model import Array, Feeds
from model_in_image.model.signature import ELEMENT_TYPES, TensorSpec
from model_in_image.state import MODEL_VERSION

PROBABILITIES = "probabilities"
LABEL = "label"

# V2 のデータ型 → numpy の型（リトルエンディアン。BYTES は別扱い）
DATATYPE_TO_NUMPY: dict[str, np.dtype[Any]] = {
    datatype: dtype.newbyteorder("<")
    for dtype, datatype in ELEMENT_TYPES.values()
    if datatype != "BYTES"
}
NUMPY_TO_DATATYPE = {dtype.str: datatype for datatype, dtype in DATATYPE_TO_NUMPY.items()}


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """推論の応答。binary が空でなければ JSON 部の後に続ける（header_length は JSON 部の長さ）。"""

    json_part: bytes
    binary: bytes = b""


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """出力テンソル 1 つ：数値の配列か文字列のリスト。REST と gRPC 共通。"""

    name: str
    datatype: str
    shape: list[int]
    values: Array | list[str]

    def raw(self) -> bytes:
        """行優先のバイト列（BYTES は要素ごとに長さ + 本体）。"""
        if isinstance(self.values, list):
            return serialize_bytes(self.values)
        return self.values.tobytes()


class OutputCatalog:
    """モデルが V2 で返す出力の一覧と、その計算。

    クラス名か確率を持つモデル：主の出力（確率なら probabilities）と label（クラス名）。
    ほかのモデル（回帰・テンソル）：グラフの出力をその名前のまま。
    """

    def __init__(self, dataplane: DataPlane) -> None:
        model = dataplane.model
        self.dataplane = dataplane
        self.virtual = model.gives_probabilities or dataplane.classes is not None
        self.primary = PROBABILITIES if model.gives_probabilities else model.heads.primary
        sample = dataplane.sample_values
        entries: list[tuple[str, str, list[int]]] = []
        if self.virtual:
            entries.append((self.primary, datatype_of(sample), [-1, *sample.shape[1:]]))
            if dataplane.classes is not None:
                entries.append((LABEL, "BYTES", [-1]))
        else:
            for spec in model.signature.outputs:
                dims = [-1 if d is None else d for d in spec.shape]
                if spec.name == model.heads.primary:
                    dims = [-1, *sample.shape[1:]]
                entries.append((spec.name, _spec_datatype(spec), [-1, *dims[1:]]))
        self.entries = tuple(entries)
        self.names = tuple(name for name, _, _ in entries)

    def compute(self, feeds: Feeds, outputs: Sequence[tuple[str, bool]]) -> list[OutputTensor]:
        """推論して要求された出力を順に作る。"""
        dataplane = self.dataplane
        if self.virtual:
            values = dataplane.predict(feeds)
            result: dict[str, Array | list[str]] = {self.primary: values}
            if any(name == LABEL for name, _ in outputs):
                result[LABEL] = dataplane.labels_of(values)
        else:
            result = dict(dataplane.infer(feeds))
        return [tensor_of(name, result[name]) for name, _ in outputs]


def _spec_datatype(spec: TensorSpec) -> str:
    return spec.datatype if spec.is_tensor else "FP32"


def datatype_of(values: Array) -> str:
    """配列の V2 の型（文字列・object は BYTES）。"""
    return NUMPY_TO_DATATYPE.get(values.dtype.newbyteorder("<").str, "BYTES")


def tensor_of(name: str, values: Array | list[str]) -> OutputTensor:
    """値を出力テンソルにする（文字列の配列は BYTES のリスト）。"""
    if isinstance(values, list):
        return OutputTensor(name, "BYTES", [len(values)], values)
    datatype = datatype_of(values)
    if datatype == "BYTES":
        return OutputTensor(name, datatype, list(values.shape), [str(v) for v in values.ravel()])
    return OutputTensor(name, datatype, list(values.shape), values)


def encode_response(
    dataplane: DataPlane,
    request_id: str | None,
    outputs: list[tuple[str, bool]],
    tensors: list[OutputTensor],
) -> EncodedResponse:
    """出力を JSON（data）またはバイナリ部（binary_data_size）にする。"""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
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
        elif tensor.values.dtype.kind == "f":
            entry["data"] = tensor.values.astype(np.float64).ravel()  # シードの /predict と同じ数値
        else:
            entry["data"] = tensor.values.ravel()
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


def model_metadata(dataplane: DataPlane, catalog: OutputCatalog, platform: str) -> dict[str, Any]:
    """モデルのメタデータ（入出力の名前・V2 の型・形。-1 はバッチ次元）。"""
    return {
        "name": dataplane.model_name,
        "versions": [MODEL_VERSION],
        "platform": platform,
        "inputs": [
            {
                "name": spec.name,
                "datatype": spec.datatype,
                "shape": [-1, *(-1 if d is None else d for d in spec.row_shape)],
            }
            for spec in dataplane.model.signature.inputs
        ],
        "outputs": [
            {"name": name, "datatype": datatype, "shape": shape}
            for name, datatype, shape in catalog.entries
        ],
    }
