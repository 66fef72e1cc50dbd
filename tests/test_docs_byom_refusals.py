"""docs/byom.md の「拒まれる例」の表の理由が、サーバーの読み込みの本当の文言であること。

表の各行のモデルを作り（動物園のモデルか、onnx.helper の小さなグラフ）、サーバーの起動と同じ
読み込み（`open_dataplane`）で拒ませて、その理由を表の文言と比べる。表の `...` は任意の文字列。
ラベルファイルは作業フォルダーの `labels.json`（表の書き方のとおり相対パス）。
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from model_in_image.errors import ModelLoadError
from model_in_image.loading import open_dataplane
from model_in_image.model.kinds import Postprocess
from support.paths import REPO_ROOT
from support.zoo import ZOO_DIR

PAGE = REPO_ROOT / "docs" / "byom.md"
TABLE_TITLE = "拒まれる例（`model refused:` の後が理由）："
ROW = re.compile(r"^\| (.+?) \| `([^`]+)`", re.M)


@dataclass(frozen=True)
class Refusal:
    """拒まれる組：モデル・ラベルファイルの中身（無ければ None）・後処理。"""

    model: Path
    labels: dict[str, str] | None = None
    postprocess: Postprocess = Postprocess.NONE


def _graph(tmp: Path, name: str, element: int, width: int, outputs: int) -> Path:
    """x [N, width] → Cast(float) → MatMul → y [N, outputs] の小さなグラフ。"""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [width, outputs], [0.5] * width * outputs)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["xf", "w"], ["y"]),
        ],
        name,
        [helper.make_tensor_value_info("x", element, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        [weights],
    )
    # IR 9：このリポジトリの onnxruntime が読める版（onnx の既定はより新しい）
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _not_onnx(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(b"not an onnx model\n")
    return path


# 表の 1 列目 → その組を作る関数（表に行が増えたらここにも足す）
SCENARIOS: dict[str, Callable[[Path], Refusal]] = {
    "クラス数とラベルの数が違う": lambda tmp: Refusal(
        ZOO_DIR / "sklearn_logreg_tensor.onnx", {"0": "a", "1": "b"}
    ),
    "回帰モデル（LinearRegression など）に分類のラベルを付けたもの": lambda tmp: Refusal(
        ZOO_DIR / "sklearn_linear_regression.onnx", {"0": "cheap", "1": "dear"}
    ),
    "文字列のクラス名と違う順のラベル": lambda tmp: Refusal(
        ZOO_DIR / "sklearn_string_labels.onnx", {"0": "malignant", "1": "benign"}
    ),
    "確率を出すモデルに `MODEL_POSTPROCESS=softmax`": lambda tmp: Refusal(
        ZOO_DIR / "sklearn_logreg_tensor.onnx", postprocess=Postprocess.SOFTMAX
    ),
    "1 列のロジットに softmax": lambda tmp: Refusal(
        _graph(tmp, "one_logit", TensorProto.FLOAT, 4, 1), postprocess=Postprocess.SOFTMAX
    ),
    "使えない型の入力（例 uint16）": lambda tmp: Refusal(
        _graph(tmp, "uint16", TensorProto.UINT16, 4, 3)
    ),
    "ONNX ではないファイル": lambda tmp: Refusal(_not_onnx(tmp)),
}


def table_rows() -> list[tuple[str, str]]:
    """表の (モデル, 理由) の行。"""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(TABLE_TITLE)
    table = text[start : text.index("\n\n", text.index("|---", start))]
    return ROW.findall(table)


ROWS = table_rows()


def test_every_row_has_a_scenario() -> None:
    assert sorted(model for model, _ in ROWS) == sorted(SCENARIOS)


@pytest.mark.parametrize(("model", "reason"), ROWS, ids=[model for model, _ in ROWS])
def test_refusal_reason_is_the_servers(
    model: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    case = SCENARIOS[model](tmp_path)
    labels = None
    if case.labels is not None:
        labels = Path("labels.json")
        labels.write_text(json.dumps(case.labels), encoding="utf-8")
    with pytest.raises(ModelLoadError) as refused:
        open_dataplane(case.model, labels, name="doc", postprocess=case.postprocess)
    pattern = ".*".join(re.escape(part) for part in reason.split("..."))
    assert re.fullmatch(pattern, refused.value.message, re.S), (
        f"the page says\n  {reason}\nthe server says\n  {refused.value.message}"
    )
