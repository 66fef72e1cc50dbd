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

from model_in_image.codecs.v2_classification import Classification, count_of
from model_in_image.dataplane import DataPlane
from model_in_image.model.kinds import ModelKind
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


# グラフの出力名が導いた出力（probabilities・label）と重なるときに、グラフの出力を指す接頭辞
GRAPH_PREFIX = "graph:"


class OutputCatalog:
    """モデルが V2 で返せる出力の一覧（available）、既定で返す出力（names）、その計算。

    導いた出力：確率を出すモデルは probabilities（ZipMap も [N, C]、後処理の後）、クラス名の
    あるモデルは label（最尤クラスの名前）。グラフの出力はすべてその名前のまま（そのままの値）。
    名前が導いた出力と重なるグラフの出力は "graph:" を付けた名前で返す（例: graph:label は
    分類器のグラフが出すクラスのコード）。既定：分類器と確率のネットは probabilities と label、
    ロジットのネットはロジットと label、ほか（回帰・テンソル）はグラフの全出力。
    """

    def __init__(self, dataplane: DataPlane) -> None:
        model = dataplane.model
        self.dataplane = dataplane
        sample = dataplane.sample_values
        derived: list[tuple[str, str, list[int]]] = []
        if model.gives_probabilities:
            derived.append((PROBABILITIES, datatype_of(sample), [-1, *sample.shape[1:]]))
        if dataplane.classes is not None:
            derived.append((LABEL, "BYTES", [-1]))
        taken = {name for name, _, _ in derived}
        self._label = LABEL in taken
        # 公開名 → グラフの出力名
        self._graph: dict[str, str] = {}
        graph: list[tuple[str, str, list[int]]] = []
        for spec in model.signature.outputs:
            public = GRAPH_PREFIX + spec.name if spec.name in taken else spec.name
            self._graph[public] = spec.name
            graph.append((public, _spec_datatype(spec), _spec_shape(spec, model.num_classes)))
        self.entries = tuple(derived + graph)
        self.available = tuple(name for name, _, _ in self.entries)
        if not derived:
            defaults = [name for name, _, _ in graph]
        elif model.gives_probabilities:
            defaults = [name for name, _, _ in derived]
        else:  # ロジットのネット：ロジットそのものとクラス名
            defaults = [_public(self._graph, model.heads.primary), LABEL]
        self.names = tuple(defaults)
        # 分類拡張：導いた probabilities と、クラスの得点を出すグラフの出力（主の出力）
        scores = {PROBABILITIES} if model.gives_probabilities else set()
        if model.num_classes is not None:
            scores.add(_public(self._graph, model.heads.primary))
        self.classification = Classification(
            self.entries, scores, _known_labels(dataplane), model.kind.value
        )

    async def compute(
        self, feeds: Feeds, outputs: Sequence[tuple[str, bool]]
    ) -> list[OutputTensor]:
        """推論して要求された出力を順に作る（グラフの出力を求められたときだけ全出力を読む）。"""
        dataplane = self.dataplane
        self.classification.check(outputs)
        graph = [name for name, _ in outputs if name in self._graph]
        label = self._label and any(name == LABEL for name, _ in outputs)
        result: dict[str, Array | list[str]] = {}
        if graph:
            values, raw = await dataplane.infer_async(feeds)
            for name in graph:
                result[name] = raw[self._graph[name]]
            if label:  # 分類器はグラフ自身のラベルの出力から（SVC では確率の最大の列と違いうる）
                result[LABEL] = dataplane.labels_from(values, raw)
        elif label:
            values, result[LABEL] = await dataplane.predict_labels_async(feeds)
        else:
            values = await dataplane.predict_async(feeds)
        result[PROBABILITIES] = values
        return [self._tensor(output, result[output[0]]) for output in outputs]

    def _tensor(self, output: tuple[str, bool], values: Array | list[str]) -> OutputTensor:
        """出力テンソル（分類を求められたら上位 k クラスの BYTES [N, k]）。"""
        name, _ = output
        count = count_of(output)
        if count is None or isinstance(values, list):
            return tensor_of(name, values)
        shape, items = self.classification.top_k(name, values, count)
        return OutputTensor(name, "BYTES", shape, items)


def _known_labels(dataplane: DataPlane) -> tuple[str, ...] | None:
    """分類の label に使うクラス名（列の番号しか無いネットは None：score:index だけ）。"""
    classes = dataplane.classes
    if classes is None or dataplane.kind is ModelKind.CLASSIFIER:
        return classes
    return None if classes == tuple(str(i) for i in range(len(classes))) else classes


def _public(graph: dict[str, str], name: str) -> str:
    return next(public for public, own in graph.items() if own == name)


def _spec_shape(spec: TensorSpec, num_classes: int | None) -> list[int]:
    """メタデータの形（バッチは -1。ZipMap は [-1, クラス数]）。"""
    if not spec.is_tensor:
        return [-1, num_classes or -1]
    return [-1, *(-1 if d is None else d for d in spec.shape[1:])]


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
