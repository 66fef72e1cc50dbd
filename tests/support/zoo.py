"""テスト用のモデル動物園（tests/zoo/cases）を読む。

各ケースは `model.onnx`（フレームワーク自身が書き出したもの）と `case.json`（入出力、利用者が
/predict に送る形の行、フレームワーク自身が計算した期待値、許容誤差）。作り方は tests/zoo/README.md。
このモジュールは numpy と onnxruntime だけを使う（フレームワークはメインの venv に無い）。
tests/zoo/make_zoo.py も同じ変換を使うので、ここを変えたら `make zoo-check` で確かめる。
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from support.paths import REPO_ROOT

Array = np.ndarray[Any, Any]
ZOO_DIR = REPO_ROOT / "tests" / "zoo"
CASES_DIR = ZOO_DIR / "cases"
SCHEMA_FILE = ZOO_DIR / "case.schema.json"
KINDS = ("classifier", "probabilities", "logits", "regressor", "tensor")

# ONNX Runtime の要素型 ↔ case.json の dtype
_ORT_TO_DTYPE = {
    "float": "float32",
    "double": "float64",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
    "string": "string",
}
_DTYPE_TO_NUMPY: dict[str, Any] = {
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
    "string": np.object_,
}
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class ZooInputError(ValueError):
    """行が入力の型・形に合わない（サーバーなら 400 になる入力）。"""

    def __init__(self, input_name: str, message: str) -> None:
        super().__init__(f"input {input_name!r}: {message}")
        self.input_name = input_name


@dataclass(frozen=True)
class TensorSpec:
    """グラフの入力または出力：名前、dtype（ZipMap は `seq(map(K,float32))`）、形（動的な次元は None）。"""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    @property
    def is_zipmap(self) -> bool:
        """ZipMap の出力（クラス → 確率の辞書の列）か。"""
        return self.dtype.startswith("seq(map(")

    @property
    def fixed_batch(self) -> int | None:
        """先頭（バッチ）の次元が固定ならその大きさ。"""
        if self.shape and isinstance(self.shape[0], int):
            return self.shape[0]
        return None

    def as_json(self) -> dict[str, Any]:
        """case.json での形。"""
        shape = None if self.shape is None else list(self.shape)
        return {"name": self.name, "dtype": self.dtype, "shape": shape}


@dataclass(frozen=True)
class Expected:
    """フレームワークが計算した 1 つの出力（source はその呼び出し、例 `predict_proba(X)`）。"""

    output: str
    source: str
    values: Array


@dataclass(frozen=True)
class BadRows:
    """サーバーが 400 で断るべき行と、エラーが名指しすべき入力。"""

    reason: str
    rows: list[Any]
    input_name: str


@dataclass(frozen=True)
class ZooCase:
    """動物園の 1 ケース（case.json を読んだもの）。"""

    directory: Path
    name: str
    description: str
    framework: str
    framework_version: str
    exporter: str
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    classes: tuple[int | str, ...] | None
    target_names: tuple[str, ...] | None
    rows: list[Any]
    expected: tuple[Expected, ...]
    rtol: float
    atol: float
    notes: str

    @property
    def model(self) -> Path:
        """ONNX モデルのファイル。"""
        return self.directory / "model.onnx"

    @property
    def class_names(self) -> list[str] | None:
        """フレームワークの順のクラス名（整数は "3" のように文字列にする）。"""
        return None if self.classes is None else [str(c) for c in self.classes]

    @property
    def fixed_batch(self) -> int | None:
        """入力のバッチの次元が固定ならその大きさ（N 行は固定の大きさずつ流す）。"""
        return self.inputs[0].fixed_batch

    def output(self, name: str) -> TensorSpec:
        """名前で出力を引く。"""
        return next(spec for spec in self.outputs if spec.name == name)

    def feeds(self, rows: Sequence[Any] | None = None) -> dict[str, Array]:
        """利用者の行（既定は case.json の rows）を ONNX Runtime の入力に変える（型は厳密に確かめる）。"""
        rows = self.rows if rows is None else rows
        if len(self.inputs) == 1:
            return {self.inputs[0].name: to_array(self.inputs[0], rows)}
        return {spec.name: to_array(spec, _column(spec.name, rows, self.inputs)) for spec in self.inputs}

    def session(self) -> ort.InferenceSession:
        """このモデルの推論セッション（1 スレッド：共有マシンで静かに動かす）。"""
        return _session(self.model)

    def run(self, rows: Sequence[Any] | None = None) -> dict[str, Array]:
        """ONNX Runtime で推論する（固定バッチは分けて流し、ZipMap はクラス順の行列にする）。"""
        rows = self.rows if rows is None else rows
        step = self.fixed_batch or max(len(rows), 1)
        parts = [self._run_once(rows[start : start + step]) for start in range(0, len(rows), step)]
        return {spec.name: np.concatenate([p[spec.name] for p in parts]) for spec in self.outputs}

    def _run_once(self, rows: Sequence[Any]) -> dict[str, Array]:
        session = self.session()
        values = session.run(None, self.feeds(rows))
        names = [meta.name for meta in session.get_outputs()]
        return {
            name: self._zipmap_matrix(value) if self.output(name).is_zipmap else np.asarray(value)
            for name, value in zip(names, values, strict=True)
        }

    def _zipmap_matrix(self, value: list[dict[Any, float]]) -> Array:
        if self.classes is None:
            raise ValueError(f"{self.name}: a ZipMap output needs the case's classes")
        return np.array([[row[c] for c in self.classes] for row in value], dtype=np.float64)


def to_array(spec: TensorSpec, values: Sequence[Any]) -> Array:
    """1 つの入力の値（行ごと）を、その dtype と形の配列にする。型が違えば ZooInputError。"""
    for value in _leaves(values):
        _check_leaf(spec, value)
    try:
        array = np.asarray(values, dtype=_DTYPE_TO_NUMPY[spec.dtype])
    except (ValueError, TypeError) as error:
        raise ZooInputError(spec.name, f"rows are not a regular array ({error})") from error
    return _reshaped(spec, array)


def _reshaped(spec: TensorSpec, array: Array) -> Array:
    shape = spec.shape or ()
    if len(shape) == array.ndim + 1 and shape[-1] == 1:
        # 複数入力の [N, 1] の入力には、行ごとにスカラーを送る
        array = array.reshape((*array.shape, 1))
    if array.ndim != len(shape):
        raise ZooInputError(spec.name, f"expected rank {len(shape)}, got shape {array.shape}")
    for axis, (want, got) in enumerate(zip(shape[1:], array.shape[1:], strict=True), start=1):
        if want is not None and want != got:
            raise ZooInputError(spec.name, f"dimension {axis} must be {want}, got {got}")
    return array


def _leaves(values: Any) -> Iterator[Any]:
    if isinstance(values, list | tuple):
        for value in values:
            yield from _leaves(value)
    else:
        yield values


def _check_leaf(spec: TensorSpec, value: Any) -> None:
    if spec.dtype == "string":
        ok = isinstance(value, str)
    elif spec.dtype == "bool":
        ok = isinstance(value, bool)
    elif spec.dtype in _INT_RANGES:
        low, high = _INT_RANGES[spec.dtype]
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            raise ZooInputError(spec.name, f"{value} is out of range for {spec.dtype}")
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    if not ok:
        raise ZooInputError(spec.name, f"{value!r} is not a valid {spec.dtype} value")


def _column(name: str, rows: Sequence[Any], inputs: Sequence[TensorSpec]) -> list[Any]:
    known = {spec.name for spec in inputs}
    column = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise ZooInputError(name, f"a model with several inputs takes objects, got {row!r}")
        unknown = sorted(set(row) - known)
        if unknown:
            raise ZooInputError(unknown[0], "is not an input of this model")
        if name not in row:
            raise ZooInputError(name, "is missing")
        column.append(row[name])
    return column


@cache
def _session(model: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def signature(session: ort.InferenceSession) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """セッションから読んだ入力と出力（case.json の inputs・outputs と同じ形）。"""
    return tuple(map(_spec, session.get_inputs())), tuple(map(_spec, session.get_outputs()))


def _spec(meta: Any) -> TensorSpec:
    kind: str = meta.type
    if kind.startswith("tensor("):
        shape = tuple(d if isinstance(d, int) else None for d in meta.shape)
        return TensorSpec(meta.name, _ORT_TO_DTYPE[kind[7:-1]], shape)
    # 例 seq(map(int64,tensor(float))) → seq(map(int64,float32))
    key, value = kind.removeprefix("seq(map(").removesuffix("))").split(",", 1)
    return TensorSpec(meta.name, f"seq(map({key},{_ORT_TO_DTYPE[value[7:-1]]}))", None)


def _tensor(entry: Mapping[str, Any]) -> TensorSpec:
    shape = entry["shape"]
    return TensorSpec(entry["name"], entry["dtype"], None if shape is None else tuple(shape))


def _optional_tuple(value: list[Any] | None) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


def read_case(directory: Path) -> ZooCase:
    """1 つのケースのディレクトリを読む。"""
    data = json.loads((directory / "case.json").read_text(encoding="utf-8"))
    return ZooCase(
        directory=directory,
        name=data["name"],
        description=data["description"],
        framework=data["framework"],
        framework_version=data["framework_version"],
        exporter=data["exporter"],
        kind=data["kind"],
        inputs=tuple(map(_tensor, data["inputs"])),
        outputs=tuple(map(_tensor, data["outputs"])),
        classes=_optional_tuple(data["classes"]),
        target_names=_optional_tuple(data.get("target_names")),
        rows=data["rows"],
        expected=tuple(
            Expected(name, entry["from"], np.asarray(entry["values"]))
            for name, entry in data["expected"].items()
        ),
        rtol=data["tolerance"]["rtol"],
        atol=data["tolerance"]["atol"],
        notes=data.get("notes", ""),
    )


def case_names() -> list[str]:
    """コミットされたケースの名前（ディレクトリ名の順）。"""
    return sorted(path.parent.name for path in CASES_DIR.glob("*/case.json"))


def load_case(name: str) -> ZooCase:
    """名前でケースを読む。"""
    return read_case(CASES_DIR / name)


def all_cases(*, kind: str | None = None, framework: str | None = None) -> list[ZooCase]:
    """すべてのケース（kind や framework で絞れる）。pytest の parametrize にそのまま渡せる。"""
    found = [load_case(name) for name in case_names()]
    return [
        case
        for case in found
        if (kind is None or case.kind == kind) and (framework is None or case.framework == framework)
    ]


def bad_rows(case: ZooCase) -> list[BadRows]:
    """このケースの入力に対する不正な行（種類ごと）。どれも feeds() が ZooInputError にする。"""
    first = case.rows[0]
    if len(case.inputs) > 1:
        return _bad_objects(case, first)
    spec = case.inputs[0]
    bad = [BadRows("a row one value short", [first[:-1]], spec.name)]
    wrong = {"string": 12.5, "bool": "yes"}.get(spec.dtype, "abc")
    bad.append(BadRows(f"{wrong!r} into a {spec.dtype} input", [[wrong, *first[1:]]], spec.name))
    if spec.dtype in _INT_RANGES:
        too_big = _INT_RANGES[spec.dtype][1] + 1
        bad.append(BadRows("an integer that overflows", [[too_big, *first[1:]]], spec.name))
        bad.append(BadRows("a float into an integer input", [[1.5, *first[1:]]], spec.name))
    return bad


def _bad_objects(case: ZooCase, first: Mapping[str, Any]) -> list[BadRows]:
    name = case.inputs[0].name
    missing = {key: value for key, value in first.items() if key != name}
    float_input = next((s.name for s in case.inputs if s.dtype.startswith("float")), None)
    string_input = next((s.name for s in case.inputs if s.dtype == "string"), None)
    bad = [
        BadRows(f"input {name!r} missing", [missing], name),
        BadRows("an unknown key", [{**first, "bogus": 1}], "bogus"),
        BadRows("a list instead of an object", [list(first.values())], name),
    ]
    if float_input is not None:
        bad.append(BadRows("a string into a float input", [{**first, float_input: "abc"}], float_input))
    if string_input is not None:
        bad.append(BadRows("a number into a string input", [{**first, string_input: 3}], string_input))
    return bad
