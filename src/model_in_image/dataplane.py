"""データプレーン：入力の検証と推論（プロトコルを知らない）。

シード API・V2 REST・CLI はすべてここを通る（検証規則はこの一か所だけ）。
ボディの解析と応答の直列化は codecs、HTTP は transport と api が受け持つ。
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np
from numpy.typing import DTypeLike

from model_in_image.errors import InvalidInputError, ModelLoadError
from model_in_image.modelcard import ModelCard
from model_in_image.runtime import (
    FloatArray,
    NonFiniteOutputError,
    OnnxClassifier,
    check_distribution,
    model_sha256,
)
from model_in_image.settings import Settings

logger = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)
RANGE_MESSAGE = "value must be a finite number within the float32 range"
# これ以下の値の数なら範囲の検査を Python で行う（それより大きければ numpy がはるかに速い）
SMALL_INPUT_VALUES = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """入力の上限。"""

    max_rows: int


def validate_rows(
    rows: Sequence[Sequence[float]],
    *,
    width: int,
    limits: Limits,
    loc: tuple[str | int, ...],
    dtype: DTypeLike = np.float64,
) -> FloatArray:
    """2 次元の行列を検証して dtype の配列にする（空・幅違い・不揃い・範囲外を拒否）。"""
    if len(rows) == 0:  # numpy の配列も受け付ける（配列の真偽値は曖昧）
        raise InvalidInputError.single(loc, "data must contain at least one row", "too_short")
    if len(rows) > limits.max_rows:
        raise InvalidInputError.single(
            loc, f"too many rows: {len(rows)} > limit {limits.max_rows}", "too_long"
        )
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InvalidInputError.single(
                (*loc, i), f"row {i} has {len(row)} values; the model expects {width}"
            )
    if isinstance(rows, np.ndarray) or len(rows) * width > SMALL_INPUT_VALUES:
        return check_range(np.array(rows, dtype=np.float64), loc=loc).astype(dtype, copy=False)
    check_range_values(rows, loc=loc)
    return np.array(rows, dtype=dtype)


def check_range_values(rows: Sequence[Sequence[float]], *, loc: tuple[str | int, ...]) -> None:
    """check_range と同じ規則を Python の値で確かめる（小さな入力用）。

    numpy の ufunc を 1 回でも呼ぶと直後の ONNX Runtime の推論が 10 µs ほど遅くなるため、
    小さな入力では numpy を使わない（docs/benchmarks.md）。NaN は比較が偽になり拒否される。
    """
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
                raise InvalidInputError.single((*loc, i, j), RANGE_MESSAGE)


def check_range(array: FloatArray, *, loc: tuple[str | int, ...]) -> FloatArray:
    """有限かつ float32 の範囲内であることを確かめる。"""
    magnitude = np.abs(array)
    if not (magnitude <= FLOAT32_MAX).all():  # NaN もここで拒否される
        flat = int(np.argmax(~(magnitude <= FLOAT32_MAX)))
        row, col = divmod(flat, array.shape[1])
        raise InvalidInputError.single((*loc, row, col), RANGE_MESSAGE)
    return array


@dataclass(slots=True)
class DataPlane:
    """読み込み済みの分類器 1 つと、その検証規則・サンプル推論。"""

    classifier: OnnxClassifier
    model_name: str
    sample: list[list[float]]
    limits: Limits
    card: ModelCard | None = None
    # 推論 1 回ごとに (行数, 秒) を受け取る（メトリクス用、任意）
    observer: Callable[[int, float], None] | None = None
    # 推論 1 回ごとに (入力, 確率) を受け取る（予測の監視・予測ログ・トレース。例外は握りつぶす）
    listeners: tuple[Callable[[FloatArray, FloatArray], None], ...] = ()
    sample_probabilities: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        """サンプルを検証して推論する（ウォームアップ）。"""
        try:
            features = self.validate(self.sample, loc=("sample",))
        except InvalidInputError as exc:
            raise ModelLoadError(f"sample input does not fit the model: {exc.message}") from exc
        try:
            self.sample_probabilities = self.predict(features)
        except NonFiniteOutputError as exc:
            raise ModelLoadError(f"model output on the sample input: {exc.message}") from exc
        check_distribution(self.sample_probabilities.astype(np.float64), "sample")

    @property
    def input_width(self) -> int:
        """入力の特徴量数。"""
        return self.classifier.signature.input_width

    @property
    def labels(self) -> tuple[str, ...]:
        """クラス番号順のラベル名。"""
        return self.classifier.labels

    def validate(
        self, rows: Sequence[Sequence[float]], *, loc: tuple[str | int, ...]
    ) -> FloatArray:
        """行列を検証してモデルの数値型の配列にする。"""
        return validate_rows(
            rows,
            width=self.input_width,
            limits=self.limits,
            loc=loc,
            dtype=self.classifier.input_dtype,
        )

    def predict(self, features: FloatArray) -> FloatArray:
        """検証済み配列を推論して確率 [N, C] を返す。"""
        features = features.astype(self.classifier.input_dtype, copy=False)
        if self.observer is None and not self.listeners:
            return self.classifier.predict_proba(features)
        start = perf_counter()
        probabilities = self.classifier.predict_proba(features)
        if self.observer is not None:
            self.observer(len(features), perf_counter() - start)
        for listener in self.listeners:
            try:
                listener(features, probabilities)
            except Exception:  # 観測の誤りで推論を失敗させない
                logger.exception("prediction listener failed")
        return probabilities

    def labels_of(self, probabilities: FloatArray) -> list[str]:
        """確率から最尤クラスのラベル名を返す。"""
        return self.classifier.labels_of(probabilities)


def load_dataplane(settings: Settings) -> DataPlane:
    """設定からモデルを読み込み、完全性を確かめ、ウォームアップ済みのデータプレーンを作る。

    sha256 の照合はモデルを解析する前に行う（改ざんされたファイルを ONNX Runtime に渡さない）。
    """
    sha256 = model_sha256(settings.model_filepath)
    if settings.model_sha256 and settings.model_sha256 != sha256:
        raise ModelLoadError(
            f"model integrity check failed: {settings.model_filepath} has sha256 "
            f"{sha256}, expected {settings.model_sha256} (MODEL_SHA256)"
        )
    card = _read_card(settings, sha256)
    classifier = OnnxClassifier(
        settings.model_filepath,
        settings.label_filepath,
        intra_op_threads=settings.ort_intra_op_threads,
        sha256=sha256,
    )
    sample = settings.sample_data or (card.sample_input if card else None)
    if sample is None:
        sample = [[0.0] * classifier.signature.input_width]
        logger.warning("no sample input (SAMPLE_DATA or model card): using zeros for /metadata")
    dataplane = DataPlane(
        classifier=classifier,
        model_name=settings.resolved_model_name,
        sample=sample,
        limits=Limits(max_rows=settings.max_batch_rows),
        card=card,
    )
    logger.info(
        "model loaded: name=%s file=%s sha256=%s width=%d classes=%d output=%s",
        dataplane.model_name,
        classifier.model_path,
        classifier.sha256,
        classifier.signature.input_width,
        classifier.signature.num_classes,
        classifier.signature.output_kind.value,
    )
    return dataplane


def _read_card(settings: Settings, sha256: str) -> ModelCard | None:
    """モデルカードを読み、モデルファイルの sha256 と一致するか確かめる。"""
    path = settings.resolved_model_card_filepath
    if not path.exists():
        if settings.model_card_filepath is not None:
            raise ModelLoadError(f"model card not found: {path}")
        return None
    card = ModelCard.read(path)
    if card.sha256 != sha256:
        raise ModelLoadError(
            f"model integrity check failed: {settings.model_filepath} has sha256 "
            f"{sha256}, but its model card {path} records {card.sha256}"
        )
    return card
