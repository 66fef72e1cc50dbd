"""ONNX Runtime による分類器ランタイム（HTTP を知らない）。

skl2onnx が出力する分類器（確率がテンソルでも ZipMap でも）を読み込み、
入力幅・クラス数・出力形式をモデル自身から導く。
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from math import isfinite
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from model_in_image.errors import ModelLoadError, ModelServerError

# これ以下の行数なら後処理を Python の値で行う（numpy の ufunc は直後の推論を 10 µs ほど遅くする）
SMALL_BATCH_ROWS = 8
# ラベルファイルの上限（/label と /metadata で毎回そのまま返すため）
MAX_LABEL_FILE_BYTES = 1_048_576
# 確率の行和と 1 との差の許容（起動時の確認）
PROBABILITY_SUM_TOLERANCE = 1e-3
_LABEL_TYPES = ("tensor(int64)", "tensor(string)", "tensor(int32)")

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.floating[Any]]

_INPUT_DTYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}


class OutputKind(StrEnum):
    """確率出力の形式。"""

    TENSOR = "tensor"
    ZIPMAP = "zipmap"


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """モデルから導いた入出力の情報。"""

    input_name: str
    input_type: str
    input_width: int
    output_name: str
    output_type: str
    output_kind: OutputKind
    num_classes: int
    class_keys: tuple[str, ...]


def sha256_of(path: Path) -> str:
    """ファイルの sha256（16 進）。"""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_sha256(path: Path) -> str:
    """モデルファイルの sha256（読めなければ ModelLoadError）。"""
    try:
        return sha256_of(path)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model file not found: {path}") from exc
    except OSError as exc:
        raise ModelLoadError(f"model file cannot be read: {path}: {exc}") from exc


def load_labels(path: Path) -> dict[str, str]:
    """ラベルファイル（{"0": "setosa", ...}）を読み込む（大きすぎ・空の名前・重複は拒否）。"""
    try:
        size = path.stat().st_size
        if size > MAX_LABEL_FILE_BYTES:
            raise ModelLoadError(
                f"label file is {size} bytes, over the limit of {MAX_LABEL_FILE_BYTES}: {path}"
            )
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"label file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"label file is not valid JSON: {path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ModelLoadError(f"label file must be a non-empty JSON object: {path}")
    if not all(isinstance(v, str) for v in raw.values()):
        raise ModelLoadError(f"label names must be strings: {path}")
    names = [v.strip() for v in raw.values()]
    if not all(names):
        raise ModelLoadError(f"label names must not be empty: {path}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelLoadError(f"label names must be unique; repeated: {duplicates}: {path}")
    return {str(k): v for k, v in raw.items()}


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """明示的なセッション設定（CPU・スレッド数固定・逐次実行）。"""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class NonFiniteOutputError(ModelServerError):
    """モデルの出力が有限でない（NaN・無限大）：応答できない（500）。"""


def check_distribution(probabilities: npt.NDArray[np.float64], what: str) -> None:
    """確率の分布か（有限・0〜1・行和が 1）。違えば起動を止める。"""
    rows = probabilities.reshape(len(probabilities), -1)
    if not np.isfinite(rows).all():
        raise ModelLoadError(f"model output on the {what} input is not finite: {rows.tolist()}")
    sums = rows.sum(axis=1)
    in_range = ((rows >= 0) & (rows <= 1 + PROBABILITY_SUM_TOLERANCE)).all()
    if not in_range or not np.allclose(sums, 1.0, atol=PROBABILITY_SUM_TOLERANCE):
        raise ModelLoadError(
            f"model output on the {what} input is not a probability distribution "
            f"(values in [0, 1], rows summing to 1): {rows.tolist()}"
        )


class OnnxClassifier:
    """ONNX 分類器。起動時に一度だけ読み込み、ウォームアップしてから使う。"""

    def __init__(
        self,
        model_path: Path,
        label_path: Path,
        *,
        intra_op_threads: int = 1,
        sha256: str | None = None,
    ) -> None:
        self.model_path = model_path
        self.label_path = label_path
        self.sha256 = sha256 or model_sha256(model_path)
        self._session = self._open_session(model_path, intra_op_threads)
        self.signature = self._derive_signature(self._session)
        self.labels = self._match_labels(load_labels(label_path), self.signature)
        self._label_array = np.array(self.labels, dtype=object)
        self._dtype = _INPUT_DTYPES[self.signature.input_type]
        self._outputs = [self.signature.output_name]

    @staticmethod
    def _open_session(path: Path, threads: int) -> ort.InferenceSession:
        ort.disable_telemetry_events()  # 読み取り専用のコンテナで警告を出さず、外部へ送らない
        # 環境（既定のロガー）の警告は色付きの平文で標準エラーに出て LOG_FORMAT=JSON を壊すため、
        # セッションの設定と同じく誤りだけにする（例：コンテナでの GPU 検出や CPU 割り当ての失敗）
        ort.set_default_logger_severity(3)
        try:
            return ort.InferenceSession(
                str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT は独自の例外型を投げる
            raise ModelLoadError(f"model file is not a loadable ONNX model: {path}: {exc}") from exc

    @staticmethod
    def _derive_signature(session: ort.InferenceSession) -> ModelSignature:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"expected a model with one input, found {len(inputs)}")
        inp = inputs[0]
        if inp.type not in _INPUT_DTYPES:
            raise ModelLoadError(
                f"unsupported input type {inp.type} (float or double tensors only)"
            )
        shape = list(inp.shape)
        if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
            raise ModelLoadError(f"input must have shape [batch, features]; found {shape}")
        output = OnnxClassifier._probability_output(session)
        kind = OutputKind.ZIPMAP if output.type.startswith("seq(map(") else OutputKind.TENSOR
        probe = np.zeros((1, shape[1]), dtype=_INPUT_DTYPES[inp.type])
        try:
            (raw,) = session.run([output.name], {inp.name: probe})
        except Exception as exc:
            raise ModelLoadError(f"model failed a probe prediction: {exc}") from exc
        if kind is OutputKind.ZIPMAP:
            keys = tuple(str(k) for k in raw[0])
            check_distribution(np.array([list(raw[0].values())], dtype=np.float64), "probe")
        else:
            keys = tuple(str(i) for i in range(np.asarray(raw).shape[-1]))
            check_distribution(np.asarray(raw, dtype=np.float64), "probe")
        if len(keys) < 2:
            raise ModelLoadError(
                f"a classifier needs at least 2 classes; the model has {len(keys)}"
            )
        return ModelSignature(
            input_name=inp.name,
            input_type=inp.type,
            input_width=shape[1],
            output_name=output.name,
            output_type=output.type,
            output_kind=kind,
            num_classes=len(keys),
            class_keys=keys,
        )

    @staticmethod
    def _probability_output(session: ort.InferenceSession) -> Any:
        """確率の出力（ZipMap か float の [N, C]）。分類器の証としてラベルの出力 [N] も要る。"""
        outputs = session.get_outputs()
        found = [(o.name, o.type, o.shape) for o in outputs]
        probabilities = [
            o
            for o in outputs
            if o.type.startswith("seq(map(")
            or (o.type in ("tensor(float)", "tensor(double)") and len(o.shape) == 2)
        ]
        if not probabilities:
            raise ModelLoadError(
                f"model has no probability output (tensor [N, C] or ZipMap): {found}"
            )
        if not any(o.type in _LABEL_TYPES and len(o.shape) == 1 for o in outputs):
            raise ModelLoadError(
                "model is not a classifier: it has no label output (int64 or string tensor [N]) "
                f"next to its probabilities; outputs: {found}"
            )
        return probabilities[0]

    @staticmethod
    def _match_labels(labels: dict[str, str], sig: ModelSignature) -> tuple[str, ...]:
        """ラベルファイルのキーがクラス番号 0..C-1 と一致することを確かめる。"""
        expected = {str(i) for i in range(sig.num_classes)}
        if set(labels) != expected:
            raise ModelLoadError(
                f"label file has {len(labels)} entries {sorted(labels)} but the model has "
                f"{sig.num_classes} classes (expected keys {sorted(expected)})"
            )
        return tuple(labels[str(i)] for i in range(sig.num_classes))

    @property
    def input_dtype(self) -> type[np.floating[Any]]:
        """モデルが受け取る数値型。"""
        return self._dtype

    def predict_proba(self, features: FloatArray) -> FloatArray:
        """確率 [N, C] を返す（入力は検証済みの [N, 幅] 配列）。有限でなければ誤り。"""
        (raw,) = self._session.run(self._outputs, {self.signature.input_name: features})
        if self.signature.output_kind is OutputKind.ZIPMAP:
            probabilities = np.array([list(row.values()) for row in raw], dtype=np.float32)
        else:
            probabilities = np.asarray(raw)
        if len(probabilities) <= SMALL_BATCH_ROWS:  # 小さな出力は numpy の ufunc を通さない
            # 確率は 0〜1 なので合計は溢れない：NaN・無限大があるときだけ合計が有限でなくなる
            finite = isfinite(sum(map(sum, probabilities.tolist())))
        else:
            finite = bool(np.isfinite(probabilities).all())
        if not finite:
            raise NonFiniteOutputError("the model returned non-finite probabilities")
        return probabilities

    def labels_of(self, probabilities: FloatArray) -> list[str]:
        """確率から最尤クラスのラベル名を返す。"""
        if len(probabilities) <= SMALL_BATCH_ROWS:  # 小さな応答は numpy を通さない
            return [self.labels[row.index(max(row))] for row in probabilities.tolist()]
        return self._label_array[probabilities.argmax(axis=1)].tolist()  # type: ignore[no-any-return]
