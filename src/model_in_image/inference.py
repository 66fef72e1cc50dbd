"""推論のデータプレーン：入力の解析・検証・推論・応答の直列化。

シードの API と V2 API の両方がここを通る（検証規則はこの一か所だけ）。
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, TypeVar

import msgspec
import numpy as np
import orjson
from numpy.typing import DTypeLike

from model_in_image.errors import InvalidInputError, ModelLoadError, ModelServerError
from model_in_image.modelcard import ModelCard
from model_in_image.runtime import SMALL_BATCH_ROWS, FloatArray, OnnxClassifier, model_sha256
from model_in_image.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

FLOAT32_MAX = float(np.finfo(np.float32).max)
_PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
RANGE_MESSAGE = "value must be a finite number within the float32 range"
# これ以下の値の数なら範囲の検査を Python で行う（それより大きければ numpy がはるかに速い）
SMALL_INPUT_VALUES = 64


class PredictBody(msgspec.Struct):
    """POST /predict のボディ（{"data": [[...], ...]}）。"""

    data: list[list[float]]


_DECODER = msgspec.json.Decoder(PredictBody)


def _loc_from_msgspec(message: str) -> list[str | int]:
    """msgspec のエラーパス（$.data[0][2]）を FastAPI の loc に変換する。"""
    loc: list[str | int] = ["body"]
    if " - at `" in message:
        path = message.rsplit(" - at `", 1)[1].rstrip("`")
        for name, index in _PATH_TOKEN.findall(path):
            loc.append(name if name else int(index))
    elif "missing required field `" in message:
        loc.append(message.split("`")[1])
    return loc


def decode_predict_body(body: bytes) -> list[list[float]]:
    """JSON ボディを型検証しながら解析する（真偽値・文字列・null は拒否）。"""
    if not body.isascii():  # msgspec は読み飛ばすキーの値の UTF-8 を確かめない
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise ModelServerError(f"Invalid JSON: not UTF-8 at byte {exc.start}", 400) from None
    try:
        return _DECODER.decode(body).data
    except msgspec.ValidationError as exc:
        message = str(exc)
        loc = _loc_from_msgspec(message)
        raise InvalidInputError.single(
            tuple(loc), message.split(" - at `", maxsplit=1)[0]
        ) from None
    except msgspec.DecodeError as exc:
        raise ModelServerError(f"Invalid JSON: {exc}", status_code=400) from None
    except RecursionError:
        raise ModelServerError("Invalid JSON: nested too deeply", status_code=400) from None


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
    if not rows:
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
class InferenceService:
    """分類器と検証規則・メタデータをまとめたデータプレーン。"""

    classifier: OnnxClassifier
    model_name: str
    sample: list[list[float]]
    limits: Limits
    card: ModelCard | None = None
    # 推論 1 回ごとに (行数, 秒) を受け取る（メトリクス用、任意）
    observer: Callable[[int, float], None] | None = None
    metadata: dict[str, Any] = field(init=False)
    metadata_json: bytes = field(init=False)
    labels_json: bytes = field(init=False)
    sample_proba_json: bytes = field(init=False)
    sample_label_json: bytes = field(init=False)

    def __post_init__(self) -> None:
        """サンプル推論（ウォームアップ）を行い、固定の応答を前計算する。"""
        width = self.classifier.signature.input_width
        try:
            sample = validate_rows(self.sample, width=width, limits=self.limits, loc=("sample",))
        except InvalidInputError as exc:
            raise ModelLoadError(f"sample input does not fit the model: {exc.message}") from exc
        probabilities = self.predict(sample)
        self.sample_proba_json = self.encode_proba(probabilities)
        self.sample_label_json = self.encode_labels(probabilities)
        sig = self.classifier.signature
        self.metadata = {
            "data_type": np.dtype(self.classifier.input_dtype).name,
            "data_structure": f"({len(self.sample)},{width})",
            "data_sample": self.sample,
            "prediction_type": str(probabilities.dtype),
            "prediction_structure": f"({len(self.sample)},{sig.num_classes})",
            "prediction_sample": _flat_if_single(probabilities.astype(np.float64).tolist()),
            "model_name": self.model_name,
            "model_sha256": self.classifier.sha256,
            "model_file": self.classifier.model_path.name,
            "output_kind": sig.output_kind.value,
            "labels": list(self.classifier.labels),
            "heldout_accuracy": self.card.heldout_accuracy if self.card else None,
        }
        self.metadata_json = orjson.dumps(self.metadata)
        self.labels_json = orjson.dumps(
            dict(enumerate(self.classifier.labels)), option=orjson.OPT_NON_STR_KEYS
        )

    @property
    def input_width(self) -> int:
        """入力の特徴量数。"""
        return self.classifier.signature.input_width

    def parse(self, body: bytes) -> FloatArray:
        """シード API のボディを検証済み配列にする。"""
        rows = decode_predict_body(body)
        return validate_rows(
            rows,
            width=self.input_width,
            limits=self.limits,
            loc=("body", "data"),
            dtype=self.classifier.input_dtype,
        )

    def predict(self, features: FloatArray) -> FloatArray:
        """検証済み配列を推論して確率 [N, C] を返す。"""
        features = features.astype(self.classifier.input_dtype, copy=False)
        if self.observer is None:
            return self.classifier.predict_proba(features)
        start = perf_counter()
        probabilities = self.classifier.predict_proba(features)
        self.observer(len(features), perf_counter() - start)
        return probabilities

    def encode_proba(self, probabilities: FloatArray) -> bytes:
        """{"prediction": [...]}（1 行ならシードと同じ平らな形）。"""
        if len(probabilities) <= SMALL_BATCH_ROWS:  # 小さな応答は numpy を通さない
            rows = probabilities.tolist()  # float32 の値はそのまま float64 で表せる
            return orjson.dumps({"prediction": _flat_if_single(rows)})
        values = probabilities.astype(np.float64)
        payload = values[0] if len(values) == 1 else values
        return b'{"prediction":' + orjson.dumps(payload, option=_JSON_OPTS) + b"}"

    def encode_labels(self, probabilities: FloatArray) -> bytes:
        """{"prediction": "setosa"}（複数行ならリスト）。"""
        names = self.classifier.labels_of(probabilities)
        return orjson.dumps({"prediction": _flat_if_single(names)})

    def predict_proba_json(self, body: bytes) -> bytes:
        """POST /predict の処理。"""
        return self.encode_proba(self.predict(self.parse(body)))

    def predict_label_json(self, body: bytes) -> bytes:
        """POST /predict/label の処理。"""
        return self.encode_labels(self.predict(self.parse(body)))


def _flat_if_single(items: list[T]) -> T | list[T]:
    """1 件ならその要素、複数ならリストのまま（シードの平らな形）。"""
    return items[0] if len(items) == 1 else items


def build_service(settings: Settings) -> InferenceService:
    """設定からモデルを読み込み、完全性を確かめ、ウォームアップ済みのサービスを作る。

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
    service = InferenceService(
        classifier=classifier,
        model_name=settings.resolved_model_name,
        sample=sample,
        limits=Limits(max_rows=settings.max_batch_rows),
        card=card,
    )
    logger.info(
        "model loaded: name=%s file=%s sha256=%s width=%d classes=%d output=%s",
        service.model_name,
        classifier.model_path,
        classifier.sha256,
        classifier.signature.input_width,
        classifier.signature.num_classes,
        classifier.signature.output_kind.value,
    )
    return service


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
