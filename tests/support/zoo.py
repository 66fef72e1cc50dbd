"""モデル動物園（tests/zoo/models）のケースを読む：numpy と onnxruntime だけを使う。

各ケースは <name>.onnx（フレームワーク自身が書き出したもの）と <name>.json（見本の行、
フレームワーク自身の予測、種類、クラス名、許容誤差）。作り直すのは make zoo
（tests/zoo/zoo_build.py）。
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi.testclient import TestClient

from support.paths import REPO_ROOT

# ケースの名前と設定の上書きからアプリのクライアントを返す（tests/zoo/conftest.py の serve）
Serve = Callable[..., TestClient]
ZOO_DIR = REPO_ROOT / "tests" / "zoo" / "models"
_NUMPY = {"float": np.float32, "double": np.float64, "int64": np.int64, "string": object}
# 同じ onnxruntime で同じグラフを動かした値との許容誤差（サーバーは値を変えないはず）
ORT_RTOL = 1e-6
ORT_ATOL = 1e-7


@dataclass(frozen=True)
class Expected:
    """フレームワークが計算した値（source はその呼び出し、例 predict_proba(X)）。"""

    source: str
    values: Any


@dataclass(frozen=True)
class ZooCase:
    """動物園の 1 ケース。"""

    name: str
    data: dict[str, Any]

    @property
    def model(self) -> Path:
        """ONNX のファイル。"""
        return ZOO_DIR / f"{self.name}.onnx"

    @property
    def kind(self) -> str:
        """期待するモデルの種類（classifier・probabilities・logits・regressor・tensor）。"""
        return str(self.data["kind"])

    @property
    def classes(self) -> list[str] | None:
        """列の順のクラス名（クラスの無いモデルは None）。"""
        return self.data["classes"]

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """グラフの入力（name・element・datatype・shape）。"""
        return list(self.data["inputs"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """グラフの出力。"""
        return list(self.data["outputs"])

    @property
    def rows(self) -> list[Any]:
        """/predict に送る見本の行。"""
        return list(self.data["rows"])

    @property
    def prediction(self) -> Expected:
        """/predict の値（フレームワーク自身の予測）。"""
        entry = self.data["prediction"]
        return Expected(entry["from"], np.asarray(entry["values"]))

    @property
    def labels(self) -> Expected | None:
        """/predict/label の値（クラスの無いモデルは None）。"""
        entry = self.data["labels"]
        return None if entry is None else Expected(entry["from"], entry["values"])

    @property
    def extra_outputs(self) -> dict[str, Expected]:
        """V2 で名前で引くほかの出力（例 KMeans の scores）。"""
        return {
            name: Expected(entry["from"], np.asarray(entry["values"]))
            for name, entry in self.data["outputs_expected"].items()
        }

    @property
    def tolerance(self) -> tuple[float, float]:
        """フレームワークの値との (rtol, atol)。"""
        return self.data["tolerance"]["rtol"], self.data["tolerance"]["atol"]

    @property
    def fixed_batch(self) -> int | None:
        """入力のバッチの次元が固定ならその大きさ。"""
        batch = self.inputs[0]["shape"][0]
        return None if batch == -1 else int(batch)

    def feeds(self, rows: Sequence[Any]) -> dict[str, Any]:
        """行を ONNX Runtime の入力にする（複数入力なら行は入力名をキーとする辞書）。"""
        if len(self.inputs) == 1:
            spec = self.inputs[0]
            return {spec["name"]: np.array(rows, dtype=_NUMPY[spec["element"]])}
        return {
            spec["name"]: np.array([[row[spec["name"]]] for row in rows], _NUMPY[spec["element"]])
            for spec in self.inputs
        }

    def run(self, output: str) -> Any:
        """onnxruntime でグラフを直に動かした出力 1 つ（ZipMap はクラスの順の行列）。"""
        session = _session(self.model)
        step = self.fixed_batch or len(self.rows)
        parts = [
            session.run([output], self.feeds(self.rows[i : i + step]))[0]
            for i in range(0, len(self.rows), step)
        ]
        if isinstance(parts[0], list):
            keys = {str(k): k for k in parts[0][0]}
            order = [keys[c] for c in self.classes or ()]
            return np.array([[row[k] for k in order] for part in parts for row in part])
        return np.concatenate(parts)


@cache
def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def case_names() -> list[str]:
    """コミットされたケースの名前（名前の順）。"""
    return sorted(path.stem for path in ZOO_DIR.glob("*.json"))


@cache
def load_case(name: str) -> ZooCase:
    """名前でケースを読む。"""
    return ZooCase(name, json.loads((ZOO_DIR / f"{name}.json").read_text(encoding="utf-8")))


def cases(*kinds: str) -> list[str]:
    """種類で絞ったケースの名前（無指定ならすべて）。"""
    return [name for name in case_names() if not kinds or load_case(name).kind in kinds]


def softmax(values: Any) -> Any:
    """行ごとの softmax（期待値の計算用）。"""
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


V2Tensor = tuple[str, str, list[int], list[Any]]


def v2_tensors(case: ZooCase, rows: list[Any]) -> list[V2Tensor]:
    """行を V2 の入力テンソル (名前, 型, 形, 平らな値) にする（複数入力は入力ごとに [N, 1]）。"""
    if len(case.inputs) == 1:
        spec = case.inputs[0]
        shape = [len(rows), *np.shape(rows)[1:]]
        data = np.asarray(rows, dtype=object).ravel().tolist()
        return [(spec["name"], spec["datatype"], shape, data)]
    return [
        (spec["name"], spec["datatype"], [len(rows), 1], [row[spec["name"]] for row in rows])
        for spec in case.inputs
    ]


def v2_request(case: ZooCase, rows: list[Any]) -> dict[str, Any]:
    """行を V2 REST の推論リクエストにする（入力はグラフの名前と型）。"""
    return {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "data": data}
            for name, datatype, shape, data in v2_tensors(case, rows)
        ]
    }


def v2_outputs(client: TestClient, case: ZooCase) -> dict[str, Any]:
    """V2 REST の推論の出力（名前 → 形どおりの配列）。"""
    response = client.post(f"/v2/models/{case.name}/infer", json=v2_request(case, case.rows))
    assert response.status_code == 200, response.text
    return {
        out["name"]: np.asarray(out["data"]).reshape(out["shape"])
        for out in response.json()["outputs"]
    }
