"""モデル動物園を作り直す（make zoo：.zoo-venv で実行。フレームワークは提供用の venv に無い）。

各ケースは実際のフレームワークで小さなモデルを学習し（乱数は固定）、その普通の書き出し方
（skl2onnx・onnxmltools・CatBoost の save_model・torch.onnx.export）で ONNX にする。
tests/zoo/models/<name>.onnx と <name>.json（見本の行・フレームワーク自身の予測・種類・
クラス名・使った版）を書く。ONNX Runtime での確かめは書き出しの誤りを早く知るためだけに行い、
期待値には使わない。

    .zoo-venv/bin/python tests/zoo/zoo_build.py [名前 ...]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo_boosting  # noqa: F401  ケースを登録する
import zoo_sklearn  # noqa: F401
import zoo_torch  # noqa: F401
from zoo_common import REGISTRY, Built

MODELS_DIR = Path(__file__).resolve().parent / "models"
_ONNX_ELEMENTS = {
    onnx.TensorProto.FLOAT: ("float", "FP32"),
    onnx.TensorProto.DOUBLE: ("double", "FP64"),
    onnx.TensorProto.INT64: ("int64", "INT64"),
    onnx.TensorProto.INT32: ("int32", "INT32"),
    onnx.TensorProto.BOOL: ("bool", "BOOL"),
    onnx.TensorProto.STRING: ("string", "BYTES"),
}


def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
    """グラフの入力・出力（名前・要素型・V2 の型・形。可変の次元は -1、テンソル以外は形なし）。"""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": value.name, "element": kind, "datatype": None, "shape": None}
    tensor = value.type.tensor_type
    element, datatype = _ONNX_ELEMENTS[tensor.elem_type]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return {"name": value.name, "element": element, "datatype": datatype, "shape": dims}


def feeds(model: onnx.ModelProto, rows: Sequence[Any]) -> dict[str, np.ndarray]:
    """見本の行を ONNX Runtime の入力にする（複数入力なら行は入力名をキーとする辞書）。"""
    inputs = [describe(i) for i in model.graph.input]
    numpy_types = {"float": np.float32, "double": np.float64, "int64": np.int64, "string": object}
    result = {}
    for spec in inputs:
        values = rows if len(inputs) == 1 else [[row[spec["name"]]] for row in rows]
        result[spec["name"]] = np.array(values, dtype=numpy_types[spec["element"]])
    return result


def run_onnx(model: onnx.ModelProto, rows: Sequence[Any]) -> list[Any]:
    """ONNX Runtime の値（固定のバッチなら 1 行ずつ）。書き出しの確かめにだけ使う。"""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = describe(model.graph.input[0])["shape"][0]
    if batch == -1:
        return list(session.run(None, feeds(model, rows)))
    parts = [session.run(None, feeds(model, rows[i : i + batch])) for i in range(len(rows))]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def matrix(value: Any, classes: Sequence[str] | None) -> np.ndarray:
    """ZipMap（辞書の列）はクラスの順の行列に、テンソルはそのまま。"""
    if isinstance(value, list):
        assert classes is not None
        keys = list(value[0])
        order = [next(k for k in keys if str(k) == c) for c in classes]
        return np.array([[row[k] for k in order] for row in value], dtype=np.float64)
    return np.asarray(value)


def check(built: Built, model: onnx.ModelProto) -> float:
    """フレームワークの予測と ONNX Runtime の値を比べ、最大の絶対誤差を返す。"""
    outputs = dict(
        zip([o.name for o in model.graph.output], run_onnx(model, built.rows), strict=True)
    )
    worst = 0.0
    for name, (_, values) in built.compare.items():
        got = matrix(outputs[name], built.classes)
        want = np.asarray(values)
        got = got.reshape(want.shape)
        if want.dtype.kind in "fc":
            rtol, atol = built.tolerance
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=built.name)
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))))
        else:
            assert [str(v) for v in got.ravel()] == [str(v) for v in want.ravel()], built.name
    return worst


def versions(packages: Iterable[str]) -> dict[str, str]:
    """書き出しに使ったライブラリの版。"""
    return {name: version(name) for name in ("numpy", "onnx", *packages)}


# 書き出しのたびに変わるだけの情報（CatBoost の学習時刻と GUID）
_VOLATILE_METADATA = frozenset({"train_finish_time", "model_guid"})


def normalise(model: onnx.ModelProto, name: str) -> bytes:
    """作り直しても同じバイト列になるようにする（計算には触れない）。

    onnxmltools はグラフ名に乱数の uuid を付け、CatBoost は時刻を書く。opset の並びは
    PYTHONHASHSEED に左右されるので、make zoo はそれを固定する。
    """
    if re.fullmatch(r"[0-9a-f]{32}", model.graph.name):
        model.graph.name = name
    kept = [p for p in model.metadata_props if p.key not in _VOLATILE_METADATA]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return model.SerializeToString()


def write(built: Built) -> None:
    """<name>.onnx と <name>.json を書く。"""
    model = onnx.load_from_string(built.model)
    data = normalise(model, built.name)
    onnx.checker.check_model(model)
    worst = check(built, model)
    case = {
        "name": built.name,
        "description": built.description,
        "framework": built.framework,
        "exporter": built.exporter,
        "versions": versions(built.packages),
        "kind": built.kind,
        "classes": built.classes,
        "inputs": [describe(i) for i in model.graph.input],
        "outputs": [describe(o) for o in model.graph.output],
        "rows": built.rows,
        "prediction": {"from": built.prediction[0], "values": _plain(built.prediction[1])},
        "labels": None
        if built.labels is None
        else {"from": built.labels[0], "values": [str(v) for v in built.labels[1]]},
        "outputs_expected": {
            name: {"from": source, "values": _plain(values)}
            for name, (source, values) in built.extra_outputs.items()
        },
        "tolerance": dict(zip(("rtol", "atol"), built.tolerance, strict=True)),
        "export_max_abs_diff": worst,
        "notes": built.notes,
    }
    (MODELS_DIR / f"{built.name}.onnx").write_bytes(data)
    text = json.dumps(case, indent=1, ensure_ascii=False) + "\n"
    (MODELS_DIR / f"{built.name}.json").write_text(text, encoding="utf-8")
    print(f"{built.name:28} {built.kind:13} {len(data):7} B  max|diff| {worst:.2e}")


def _plain(values: Any) -> Any:
    return np.asarray(values).tolist()


def main(names: Sequence[str]) -> None:
    """指定のケース（無ければすべて）を作る。"""
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    for name in names or sorted(REGISTRY):
        write(REGISTRY[name]())


if __name__ == "__main__":
    main(sys.argv[1:])
