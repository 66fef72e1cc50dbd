"""データプレーン：入力の検証と推論（プロトコルを知らない）。

シード API・V2 REST・gRPC・CLI はすべてここを通る（検証規則はこの一か所だけ）。
どのモデルも同じ形で扱う：入出力はシグネチャ、種類とクラス名はモデル（model パッケージ）から。
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from model_in_image.errors import InvalidInputError, ModelLoadError, NoClassesError
from model_in_image.model.inputs import check_count, float_matrix, to_feeds
from model_in_image.model.kinds import ModelKind, is_distribution
from model_in_image.model.onnx_model import (
    SMALL_BATCH_ROWS,
    Array,
    Feeds,
    InputRejectedError,
    NonFiniteOutputError,
    OnnxModel,
)
from model_in_image.modelcard import ModelCard

if TYPE_CHECKING:
    from model_in_image.batching.adaptive import AdaptiveBatcher

logger = logging.getLogger(__name__)

Listener = Callable[[Any, Array], None]


@dataclass(frozen=True, slots=True)
class Limits:
    """入力の上限。"""

    max_rows: int


@dataclass(slots=True)
class DataPlane:
    """読み込み済みのモデル 1 つと、その検証規則・クラス名・サンプル推論。"""

    model: OnnxModel
    model_name: str
    sample: list[Any]
    limits: Limits
    # 確率（またはロジット）の列の順のクラス名。分からなければ None
    classes: tuple[str, ...] | None = None
    card: ModelCard | None = None
    # 推論 1 回ごとに (行数, 秒) を受け取る（メトリクス用、任意）
    observer: Callable[[int, float], None] | None = None
    # 推論 1 回ごとに (入力, 値) を受け取る（予測の監視・予測ログ・トレース。例外は握りつぶす）
    listeners: tuple[Listener, ...] = ()
    # 適応バッチ（MAX_BATCH_SIZE > 1 のときだけ。None なら *_async はその場で推論する）
    batcher: AdaptiveBatcher | None = None
    sample_values: Array = field(init=False)
    # サンプルのクラス名（/predict/test/label。クラスの無いモデルは空）
    sample_labels: list[str] = field(init=False)
    # 分類器のラベルの出力のコード → クラス名（"3" → "three"）。無ければ確率の最大の列で決める
    _names_by_code: dict[str, str] | None = field(init=False)
    _width: int | None = field(init=False)
    _label_array: Any = field(init=False)

    def __post_init__(self) -> None:
        """サンプルを検証して推論する（ウォームアップ）。"""
        spec = self.model.signature.inputs[0]
        single = len(self.model.signature.inputs) == 1
        self._width = spec.width if single and spec.is_float else None
        self._label_array = np.array(self.classes or (), dtype=object)
        codes, classes = self.model.class_codes, self.classes
        self._names_by_code = None
        if codes is not None and classes is not None and len(codes) == len(classes):
            self._names_by_code = dict(zip(codes, classes, strict=True))
        try:
            feeds = self.validate(self.sample, loc=("sample",))
        except InvalidInputError as exc:
            raise ModelLoadError(
                f"sample input does not fit the model: {exc.message} at {exc.errors[0]['loc']}"
            ) from exc
        try:
            self.sample_values = self.predict(feeds)
            self.sample_labels = [] if self.classes is None else self.predict_labels(feeds)[1]
        except (NonFiniteOutputError, InputRejectedError) as exc:
            raise ModelLoadError(f"model output on the sample input: {exc.message}") from exc
        except Exception as exc:  # ORT は独自の例外型を投げる：起動を 1 行の理由で止める
            raise ModelLoadError(f"model failed a prediction on the sample input: {exc}") from exc
        if self.model.gives_probabilities and not is_distribution(
            self.sample_values.astype(np.float64)
        ):
            raise ModelLoadError(
                "model output on the sample input is not a probability distribution "
                f"(values in [0, 1], rows summing to 1): {self.sample_values.tolist()}"
            )

    @property
    def kind(self) -> ModelKind:
        """モデルの種類。"""
        return self.model.kind

    @property
    def input_width(self) -> int | None:
        """[N, 幅] の実数 1 入力のモデルなら幅（ほかは None）。"""
        return self._width

    @property
    def labels(self) -> tuple[str, ...]:
        """列の順のクラス名（クラスの無いモデルは空）。"""
        return self.classes or ()

    @property
    def sample_probabilities(self) -> Array:
        """サンプルの推論結果（/predict/test の値。名前は互換のため）。"""
        return self.sample_values

    def validate(
        self, rows: Sequence[Any], *, loc: tuple[str | int, ...], numeric: bool = False
    ) -> Feeds:
        """行を検証してモデルの入力にする。

        numeric=True は「行はすべて数のリスト」と解析側が確かめ済みのとき（速い経路）。
        """
        check_count(rows, self.limits.max_rows, loc)
        width = self._width
        if width is not None and (numeric or isinstance(rows, np.ndarray) or _all_numeric(rows)):
            spec = self.model.signature.inputs[0]
            return {spec.name: float_matrix(rows, width, spec.dtype, loc)}
        return to_feeds(rows, self.model.signature, loc)

    def predict(self, feeds: Feeds) -> Array:
        """検証済みの入力を推論して /predict の値を返す（確率・回帰の値・ロジットなど）。"""
        if self.observer is None and not self.listeners:
            return self.model.predict(feeds)
        start = perf_counter()
        values = self.model.predict(feeds)
        self._observe(feeds, values, start)
        return values

    def infer(self, feeds: Feeds) -> tuple[Array, dict[str, Array]]:
        """検証済みの入力を推論して、/predict の値とグラフのすべての出力を返す（V2）。"""
        start = perf_counter()
        values, outputs = self.model.infer(feeds)
        if self.observer is not None or self.listeners:
            self._observe(feeds, values, start)
        return values, outputs

    async def predict_async(self, feeds: Feeds) -> Array:
        """predict と同じ値（適応バッチが有効なら、ほかのリクエストとまとめて別スレッドで推論）。"""
        batcher = self.batcher
        if batcher is None:
            return self.predict(feeds)
        (raw,) = await batcher.run(feeds, self.model.primary_names)
        values = self.model.finish(raw)  # 後処理と有限の確認はリクエストごと
        self._notify(feeds, values)
        return values

    async def infer_async(self, feeds: Feeds) -> tuple[Array, dict[str, Array]]:
        """infer と同じ値（適応バッチが有効ならまとめて推論する）。"""
        batcher = self.batcher
        if batcher is None:
            return self.infer(feeds)
        values, outputs = self.model.collect(await batcher.run(feeds, None))
        self._notify(feeds, values)
        return values, outputs

    async def predict_labels_async(self, feeds: Feeds) -> tuple[Array, list[str]]:
        """predict_labels と同じ値（適応バッチが有効ならまとめて推論する）。"""
        if self.batcher is None:
            return self.predict_labels(feeds)
        if self.model.heads.label_output is None or self._names_by_code is None:
            values = await self.predict_async(feeds)
            return values, self.labels_of(values)
        values, outputs = await self.infer_async(feeds)
        return values, self.labels_from(values, outputs)

    def _observe(self, feeds: Feeds, values: Array, start: float) -> None:
        if self.observer is not None:
            self.observer(rows_of(feeds), perf_counter() - start)
        self._notify(feeds, values)

    def _notify(self, feeds: Feeds, values: Array) -> None:
        """リスナーに入力と値を渡す（まとめた推論でもリクエストごと）。"""
        if not self.listeners:
            return
        features = features_of(feeds)
        for listener in self.listeners:
            try:
                listener(features, values)
            except Exception:  # 観測の誤りで推論を失敗させない
                logger.exception("prediction listener failed")

    def predict_labels(self, feeds: Feeds) -> tuple[Array, list[str]]:
        """検証済みの入力を推論して (/predict の値, クラス名) を返す（クラスの無いモデルは 400）。

        分類器のクラスはグラフ自身のラベルの出力から（SVC などは確率の最大の列と違うことがある）。
        ほかのモデルは確率（またはロジット）の最大の列から。
        """
        if self.model.heads.label_output is None or self._names_by_code is None:
            values = self.predict(feeds)
            return values, self.labels_of(values)
        values, outputs = self.infer(feeds)
        return values, self.labels_from(values, outputs)

    def labels_from(self, values: Array, outputs: dict[str, Array]) -> list[str]:
        """infer の結果からクラス名（分類器はグラフのラベルの出力、ほかは値の最大の列）。"""
        label = self.model.heads.label_output
        names = self._names_by_code
        if label is None or names is None:
            return self.labels_of(values)
        try:
            return [names[str(code)] for code in outputs[label].reshape(-1).tolist()]
        except KeyError:  # グラフのクラスに無いコード（壊れたグラフ）：確率から決める
            return self.labels_of(values)

    def labels_of(self, values: Array) -> list[str]:
        """確率（またはロジット）から最尤クラスの名前を返す（クラスの無いモデルは 400）。"""
        classes = self.classes
        if classes is None:
            raise NoClassesError(self.no_classes_reason())
        if len(values) <= SMALL_BATCH_ROWS:  # 小さな応答は numpy を通さない
            return [classes[row.index(max(row))] for row in values.tolist()]
        return self._label_array[values.argmax(axis=1)].tolist()  # type: ignore[no-any-return]

    def no_classes_reason(self) -> str:
        """クラス名が無い理由（誤りの文面。確率・ロジットのネットは常に列の番号を持つ）。"""
        return f"this model is a {self.kind.value}: it has no class labels"


def rows_of(feeds: Feeds) -> int:
    """入力の行数。"""
    return len(next(iter(feeds.values())))


def features_of(feeds: Feeds) -> Any:
    """リスナーに渡す入力：1 入力ならその配列、複数なら行ごとの辞書の配列。"""
    if len(feeds) == 1:
        return next(iter(feeds.values()))
    names = list(feeds)
    columns = [feeds[name].tolist() for name in names]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    array = np.empty(len(rows), dtype=object)
    array[:] = rows
    return array


def _all_numeric(rows: Sequence[Any]) -> bool:
    """行がすべて数のリストか（JSON の型付き解析の後なら常に真。そうでなければ詳しく確かめる）。"""
    for row in rows:
        if not isinstance(row, list | tuple):
            return False
        for value in row:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
    return True
