"""ONNX Runtime で動く任意の ONNX モデル（HTTP を知らない）。

入出力の仕様はセッションから、種類とクラス名はグラフとプローブの推論から導く。
分類器・確率のネット・ロジットのネット・回帰・そのほかのテンソルのモデルを同じ形で扱う。
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from math import isfinite
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from model_in_image.errors import ModelLoadError, ModelServerError
from model_in_image.model.graph import REGRESSOR_OPS, GraphInfo, read_graph
from model_in_image.model.kinds import (
    ModelKind,
    Postprocess,
    is_distribution,
    is_label_output,
    sigmoid,
    softmax,
)
from model_in_image.model.signature import Signature, TensorSpec

logger = logging.getLogger(__name__)

Array = npt.NDArray[Any]
Feeds = dict[str, Array]
# これ以下の行数なら有限の確認を Python の値で行う（numpy の ufunc は直後の推論を遅くする）
SMALL_BATCH_ROWS = 8


class NonFiniteOutputError(ModelServerError):
    """モデルの出力が有限でない（NaN・無限大）：応答できない（500）。"""


class InputRejectedError(ModelServerError):
    """型と形は正しいが、モデルがその値では計算できない（例: 語彙の外のトークン ID）：400。"""

    status_code = 400


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """明示的なセッション設定（CPU・スレッド数固定・逐次実行）。"""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def open_session(path: Path, threads: int) -> ort.InferenceSession:
    """セッションを開く（読めない・壊れたモデルは ModelLoadError）。"""
    ort.disable_telemetry_events()  # 読み取り専用のコンテナで警告を出さず、外部へ送らない
    # 既定のロガーの警告は色付きの平文で標準エラーに出て LOG_FORMAT=JSON を壊すため誤りだけにする
    ort.set_default_logger_severity(3)
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT は独自の例外型を投げる
        raise ModelLoadError(load_failure(path, exc)) from exc


_LOCALE_FAILURE = re.compile(r"Failed to construct locale with name:\s*([^:\s]+)")


def load_failure(path: Path, exc: Exception) -> str:
    """セッションを開けなかった理由の文面（ロケールの不足はモデルの誤りと区別する）。"""
    missing = _LOCALE_FAILURE.search(str(exc))
    if missing is None:
        return f"model file is not a loadable ONNX model: {path}: {exc}"
    # skl2onnx の TfidfVectorizer・CountVectorizer は StringNormalizer に既定で en_US.UTF-8 を使う
    return (
        f"model {path} needs the locale {missing.group(1)} (a StringNormalizer node, e.g. from "
        "a skl2onnx TfidfVectorizer or CountVectorizer), which this machine does not have: "
        "re-export with options={vectorizer: {'locale': 'C.UTF-8'}} or install that locale "
        f"in the image ({exc})"
    )


@dataclass(frozen=True, slots=True)
class Heads:
    """出力の読み方：種類、/predict が返す出力、クラスの出力、ZipMap か。"""

    kind: ModelKind
    primary: str
    label_output: str | None = None
    zipmap: bool = False
    num_classes: int | None = None


def zero_feeds(signature: Signature, rows: int = 1) -> Feeds:
    """プローブ用の入力（0 と空文字列。可変の次元は 1）。"""
    feeds: Feeds = {}
    for spec in signature.inputs:
        shape = (rows, *(1 if d is None else d for d in spec.row_shape))
        if spec.is_string:
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds


class OnnxModel:
    """ONNX モデル 1 つ。起動時に一度だけ読み込み、ウォームアップしてから使う。"""

    def __init__(
        self,
        model_path: Path,
        *,
        sha256: str,
        intra_op_threads: int = 1,
        postprocess: Postprocess = Postprocess.NONE,
        kind: ModelKind | None = None,
    ) -> None:
        self.model_path = model_path
        self.sha256 = sha256
        self.postprocess = postprocess
        self._session = open_session(model_path, intra_op_threads)
        self.signature = Signature.of(self._session)
        self._all_names = [o.name for o in self.signature.outputs]
        self._run_native = _native_run(self._session)
        self.graph: GraphInfo = read_graph(model_path)
        self.fixed_batch = self.signature.fixed_batch
        probe = self._probe()
        self.heads = _decide(self.signature, self.graph, probe, kind)
        self._check_postprocess()
        # /predict に要る出力（主の出力だけ）
        self.primary_names = [self.heads.primary]
        # クラスのコード（確率の列の順）：グラフの属性、ZipMap のキー、[N, C] のネットは列の番号
        self.class_codes = self._class_codes(probe)

    @property
    def kind(self) -> ModelKind:
        """モデルの種類。"""
        return self.heads.kind

    @property
    def gives_probabilities(self) -> bool:
        """/predict の値が確率か（分類器・確率のネット・後処理あり）。"""
        return self.kind in (ModelKind.CLASSIFIER, ModelKind.PROBABILITIES) or (
            self.postprocess is not Postprocess.NONE
        )

    @property
    def num_classes(self) -> int | None:
        """確率（またはロジット）の列の数。"""
        return self.heads.num_classes

    def _probe(self) -> list[Any] | None:
        """0 の入力で一度推論する（失敗すれば None：形だけで種類を決める）。"""
        try:
            return self.run(zero_feeds(self.signature, self.fixed_batch or 1))
        except Exception as exc:  # ORT は独自の例外型を投げる
            logger.warning("probe prediction on zero inputs failed (%s); kind from shapes", exc)
            return None

    def _check_postprocess(self) -> None:
        if self.postprocess is Postprocess.NONE:
            return
        spec = self.signature.output(self.heads.primary)
        if self.kind not in (ModelKind.LOGITS, ModelKind.REGRESSOR) or not spec.is_float:
            raise ModelLoadError(
                f"MODEL_POSTPROCESS={self.postprocess.value} needs a model that outputs logits "
                f"(a float [N, C] or [N, 1] output); this model is a {self.kind.value} "
                f"with output {spec.text()}"
            )
        if self.postprocess is Postprocess.SOFTMAX and (self.num_classes or 0) < 2:
            raise ModelLoadError(
                f"MODEL_POSTPROCESS=softmax needs at least 2 columns; output {spec.text()} "
                "has one (use sigmoid for a single logit)"
            )
        if self.postprocess is Postprocess.SIGMOID and self.kind is ModelKind.REGRESSOR:
            self.heads = Heads(ModelKind.LOGITS, self.heads.primary, num_classes=2)

    def _class_codes(self, probe: list[Any] | None) -> tuple[str, ...] | None:
        count = self.num_classes
        if count is None:
            return None
        if self.kind is not ModelKind.CLASSIFIER:  # クラスの情報の無いネット：列の番号
            return tuple(str(i) for i in range(count))
        if self.graph.classes is not None and len(self.graph.classes) == count:
            return self.graph.classes
        if self.heads.zipmap and probe is not None:
            index = self._all_names.index(self.heads.primary)
            return tuple(str(k) for k in probe[index][0])
        return tuple(str(i) for i in range(count))

    def run(self, feeds: Feeds, names: list[str] | None = None) -> list[Any]:
        """グラフをそのまま実行する（固定のバッチなら大きさごとに分けて実行してつなぐ）。"""
        batch = self.fixed_batch
        rows = len(next(iter(feeds.values())))
        if batch is None or rows == batch:
            return self._run_session(names, feeds)
        chunks = [self._run_chunk(feeds, start, batch, names) for start in range(0, rows, batch)]
        joined: list[Any] = []
        for parts in zip(*chunks, strict=True):
            if isinstance(parts[0], list):
                joined.append([item for part in parts for item in part][:rows])
            else:
                joined.append(np.concatenate(parts)[:rows])
        return joined

    def _run_chunk(self, feeds: Feeds, start: int, batch: int, names: list[str] | None) -> Any:
        chunk = {}
        for name, array in feeds.items():
            part = array[start : start + batch]
            if len(part) < batch:  # 最後の端数は最後の行で埋め、結果は切り捨てる
                pad = np.repeat(part[-1:], batch - len(part), axis=0)
                part = np.concatenate([part, pad])
            chunk[name] = part
        return self._run_session(names, chunk)

    def _run_session(self, names: list[str] | None, feeds: Feeds) -> list[Any]:
        """ONNX Runtime で実行する。入力の値による失敗（INVALID_ARGUMENT）は 400 にする。

        型と形は検証済みなので、ここでの INVALID_ARGUMENT は値のせい（Gather の範囲外の添字など）。
        """
        try:
            outputs: list[Any] = self._run_native(
                self._all_names if names is None else names, feeds, None
            )
            return outputs
        except InvalidArgument as exc:
            reason = str(exc).split("INVALID_ARGUMENT : ", 1)[-1]
            raise InputRejectedError(f"the model cannot compute this input: {reason}") from None

    def predict(self, feeds: Feeds) -> Array:
        """/predict の値：確率 [N, C]、回帰の値、ロジット、または最初の出力。"""
        (raw,) = self.run(feeds, self.primary_names)
        return self.finish(raw)

    def finish(self, raw: Any) -> Array:
        """主の出力を応答の形にする（ZipMap → [N, C]、後処理、回帰の [N, 1] → [N]）。"""
        return self._shape(as_array(raw))

    def _shape(self, values: Array) -> Array:
        """配列にした主の出力に後処理をかける（回帰の [N, 1] は [N] にする）。"""
        if self.postprocess is Postprocess.SOFTMAX:
            return softmax(values)
        if self.postprocess is Postprocess.SIGMOID:
            return sigmoid(values)
        if self.kind is ModelKind.REGRESSOR and values.ndim == 2 and values.shape[1] == 1:
            return values.reshape(-1)
        return values

    def infer(self, feeds: Feeds) -> tuple[Array, dict[str, Array]]:
        """/predict の値と、グラフのすべての出力をそのまま（ZipMap は [N, C] の確率にする）。

        どの出力も配列への変換と有限の確認は 1 回だけ（主の出力はその配列に後処理をかける）。
        """
        return self.collect(self.run(feeds))

    def collect(self, outputs: list[Any]) -> tuple[Array, dict[str, Array]]:
        """run(feeds) の全出力を infer の形にする（/predict の値, 名前 → 配列）。"""
        result: dict[str, Array] = {}
        values: Array | None = None
        for spec, raw in zip(self.signature.outputs, outputs, strict=True):
            result[spec.name] = array = as_array(raw)
            if spec.name == self.heads.primary:
                values = self._shape(array)
        assert values is not None  # 主の出力は必ずグラフの出力の 1 つ
        return values, result

    def describe(self) -> str:
        """ログ用の 1 行。"""
        inputs = ", ".join(spec.text() for spec in self.signature.inputs)
        outputs = ", ".join(spec.text() for spec in self.signature.outputs)
        return f"kind={self.kind.value} inputs=[{inputs}] outputs=[{outputs}]"


def _native_run(session: ort.InferenceSession) -> Any:
    """ONNX Runtime の C++ の run（公開の run が毎回する Python の確認を省く）。

    公開の run は入力名・OrtValue の持ち主・グラフキャプチャを確かめ、EP の失敗で別の EP に
    切り替えるだけ：入力は signature で検証済みの numpy 配列、EP は CPU だけなので要らない。
    内部の属性が無い版では公開の run を使う。
    """
    native = getattr(session, "_sess", None)
    run = getattr(native, "run", None)
    if run is None:
        return session.run
    return run


def as_array(raw: Any) -> Array:
    """出力 1 つを配列にする（ZipMap の辞書の列は [N, C] の float32）。実数なら有限を確かめる。"""
    if isinstance(raw, list) and raw and isinstance(raw[0], dict):
        values = np.array([list(row.values()) for row in raw], dtype=np.float32)
    else:
        values = np.asarray(raw)
    if values.dtype.kind == "f":
        check_finite(values)
    return values


def check_finite(values: Array) -> None:
    """浮動小数点の出力が有限か（小さな出力は numpy の ufunc を通さない）。"""
    if len(values) <= SMALL_BATCH_ROWS and values.size <= 64:
        finite = all(map(isfinite, values.ravel().tolist()))
    else:
        finite = bool(np.isfinite(values).all())
    if not finite:
        raise NonFiniteOutputError("the model returned non-finite values")


def _decide(
    signature: Signature, graph: GraphInfo, probe: list[Any] | None, forced: ModelKind | None
) -> Heads:
    """出力の組と値から種類を決める（MODEL_KIND で上書きできる）。"""
    outputs = signature.outputs
    values = dict(zip([o.name for o in outputs], probe, strict=True)) if probe else {}
    labels = [o for o in outputs if is_label_output(o.onnx_type, o.shape)]
    probabilities = [o for o in outputs if _probability_like(o)]
    first = outputs[0]
    if labels and probabilities and forced in (None, ModelKind.CLASSIFIER):
        head = probabilities[0]
        zipmap = head.onnx_type.startswith("seq(map(")
        array = _as_matrix(values.get(head.name), zipmap)
        if array is None or is_distribution(array) or forced is ModelKind.CLASSIFIER:
            width = array.shape[1] if array is not None else head.shape[1]
            return Heads(ModelKind.CLASSIFIER, head.name, labels[0].name, zipmap, width)
    if forced is ModelKind.CLASSIFIER:
        raise ModelLoadError(
            "MODEL_KIND=classifier needs a label output (int64 or string [N]) and a probability "
            f"output (ZipMap or float [N, C]); outputs: {_listing(signature)}"
        )
    if forced is ModelKind.TENSOR:
        return Heads(ModelKind.TENSOR, first.name)
    if len(outputs) == 1 and first.is_float and first.rank in (1, 2):
        return _float_heads(first, graph, values.get(first.name), forced)
    if forced is not None:
        raise ModelLoadError(
            f"MODEL_KIND={forced.value} needs exactly one float output [N] or [N, C]; "
            f"outputs: {_listing(signature)}"
        )
    return Heads(ModelKind.TENSOR, first.name)


def _float_heads(
    first: TensorSpec, graph: GraphInfo, array: Any, forced: ModelKind | None
) -> Heads:
    """実数の出力 1 つのモデル：確率・ロジット・回帰のどれか。"""
    columns = (first.shape[1] if first.rank == 2 else 1) or 0
    if array is not None:
        columns = 1 if np.ndim(array) == 1 else int(np.shape(array)[1])
    regressor = forced is ModelKind.REGRESSOR or graph.produced_by(first.name, REGRESSOR_OPS)
    if columns >= 2 and not regressor:
        if forced is None and array is not None and is_distribution(np.asarray(array, "f8")):
            return Heads(ModelKind.PROBABILITIES, first.name, num_classes=columns)
        return Heads(forced or ModelKind.LOGITS, first.name, num_classes=columns)
    if forced is ModelKind.LOGITS:
        return Heads(ModelKind.LOGITS, first.name, num_classes=columns)
    return Heads(ModelKind.REGRESSOR, first.name)


def _probability_like(spec: TensorSpec) -> bool:
    return spec.onnx_type.startswith("seq(map(") or (spec.is_float and spec.rank == 2)


def _as_matrix(value: Any, zipmap: bool) -> npt.NDArray[np.float64] | None:
    if value is None:
        return None
    if zipmap:
        return np.array([list(row.values()) for row in value], dtype=np.float64)
    return np.asarray(value, dtype=np.float64)


def _listing(signature: Signature) -> str:
    return ", ".join(spec.text() for spec in signature.outputs)
