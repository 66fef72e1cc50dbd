"""ONNX のグラフそのものから読む情報（作成元・opset・各出力を作る演算・クラス名）。

ONNX Runtime のセッションは入出力の名前・型・形しか教えないため、モデルの種類と
クラス名はグラフを読んで導く（onnx パッケージは使わず、必要な部分だけの proto で読む）。
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from model_in_image.errors import ModelLoadError
from model_in_image.model._generated import onnx_subset_pb2 as pb

# クラス名（classlabels_strings / classlabels_int64s）を属性に持つ演算。確率の列の順はこの属性の順
_CLASSIFIER_OPS = frozenset(
    {"LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier", "ZipMap"}
)
REGRESSOR_OPS = frozenset(
    {"LinearRegressor", "SVMRegressor", "TreeEnsembleRegressor", "TreeEnsemble"}
)


@dataclass(frozen=True, slots=True)
class GraphInfo:
    """グラフから読んだ情報。"""

    producer_name: str = ""
    producer_version: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    # 出力名 → それを作る演算の op_type（Identity・Cast などの付け替えはさかのぼる）
    producers: dict[str, str] = field(default_factory=dict)
    # 分類の演算が持つクラス名（確率の列の順）。整数のクラスは文字列にする
    classes: tuple[str, ...] | None = None
    class_codes_are_ints: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    def library_versions(self) -> dict[str, str]:
        """カードの library_versions：作り手の版とドメインごとの opset（`<ドメイン>-opset`）。

        記録されていない値は書かない（作り手の名前だけがあれば版は unknown）。
        """
        versions: dict[str, str] = {}
        if self.producer_name:
            versions[self.producer_name] = self.producer_version or "unknown"
        versions.update({f"{domain}-opset": str(v) for domain, v in sorted(self.opsets.items())})
        return versions

    def produced_by(self, output: str, ops: frozenset[str]) -> bool:
        """出力が ops のいずれかで作られるか。"""
        return self.producers.get(output, "") in ops


_PASS_THROUGH = frozenset({"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})


def read_graph(path: Path) -> GraphInfo:
    """ONNX ファイルを読み、GraphInfo を返す（読めなければ ModelLoadError）。"""
    model = pb.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        raise ModelLoadError(f"model file is not a loadable ONNX model: {path}: {exc}") from exc
    nodes = list(model.graph.node)
    by_output = {name: node for node in nodes for name in node.output}
    producers = {name: _origin(name, by_output) for name in by_output}
    classes, ints = _classes(nodes)
    return GraphInfo(
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
        producers=producers,
        classes=classes,
        class_codes_are_ints=ints,
        metadata={p.key: p.value for p in model.metadata_props},
    )


def _origin(name: str, by_output: dict[str, pb.NodeProto]) -> str:
    """出力を作った演算を、型や形を変えるだけの演算を越えてさかのぼる。"""
    seen: set[str] = set()
    node = by_output.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        if node.input[0] in seen:
            break
        seen.add(node.input[0])
        upstream = by_output.get(node.input[0])
        if upstream is None:
            break
        node = upstream
    return node.op_type if node is not None else ""


def _classes(nodes: list[pb.NodeProto]) -> tuple[tuple[str, ...] | None, bool]:
    """分類の演算（最後のもの）のクラス名と、それが整数かどうか。"""
    for node in reversed(nodes):
        if node.op_type not in _CLASSIFIER_OPS:
            continue
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return tuple(s.decode("utf-8", "replace") for s in attribute.strings), False
            if attribute.name == "classlabels_int64s" and attribute.ints:
                return tuple(str(i) for i in attribute.ints), True
    return None, False
