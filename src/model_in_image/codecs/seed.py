"""シード API のワイヤー形式：{"data": [[...]]} ⇄ 配列、{"prediction": ...} の直列化。"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
import numpy as np
import orjson

from model_in_image.codecs.decode import decode_json
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelServerError
from model_in_image.runtime import SMALL_BATCH_ROWS, FloatArray

T = TypeVar("T")

_PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


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


def decode_rows(body: bytes) -> list[list[float]]:
    """JSON ボディを型検証しながら解析する（真偽値・文字列・null は 422、壊れた JSON は 400）。"""
    try:
        return decode_json(_DECODER, body, prefix="Invalid JSON").data
    except msgspec.ValidationError as exc:
        message = str(exc)
        loc = _loc_from_msgspec(message)
        raise InvalidInputError.single(
            tuple(loc), message.split(" - at `", maxsplit=1)[0]
        ) from None


def flat_if_single(items: list[T]) -> T | list[T]:
    """1 件ならその要素、複数ならリストのまま（シードの平らな形）。"""
    return items[0] if len(items) == 1 else items


def encode_probabilities(probabilities: FloatArray) -> bytes:
    """{"prediction": [...]}（1 行ならシードと同じ平らな形）。"""
    if len(probabilities) <= SMALL_BATCH_ROWS:  # 小さな応答は numpy を通さない
        rows = probabilities.tolist()  # float32 の値はそのまま float64 で表せる
        return orjson.dumps({"prediction": flat_if_single(rows)})
    values = probabilities.astype(np.float64)
    payload = values[0] if len(values) == 1 else values
    return b'{"prediction":' + orjson.dumps(payload, option=_NUMPY) + b"}"


def encode_labels(labels: list[str]) -> bytes:
    """{"prediction": "setosa"}（複数行ならリスト）。"""
    return orjson.dumps({"prediction": flat_if_single(labels)})


def encode_label_map(labels: tuple[str, ...]) -> bytes:
    """/label の {"0": "setosa", ...}。"""
    return orjson.dumps(dict(enumerate(labels)), option=orjson.OPT_NON_STR_KEYS)


def encode_error(exc: ModelServerError) -> bytes:
    """{"detail": ...}（入力の検証エラーは FastAPI の 422 と同じ配列形式）。"""
    if isinstance(exc, InvalidInputError):
        return orjson.dumps({"detail": exc.errors})
    return orjson.dumps({"detail": exc.message})


def encode_metadata(dataplane: DataPlane) -> bytes:
    """/metadata：シードの項目（型・形・サンプルとその推論結果）とモデルの情報。"""
    sample = dataplane.sample
    probabilities = dataplane.sample_probabilities
    metadata: dict[str, Any] = {
        "data_type": np.dtype(dataplane.classifier.input_dtype).name,
        "data_structure": f"({len(sample)},{dataplane.input_width})",
        "data_sample": sample,
        "prediction_type": str(probabilities.dtype),
        "prediction_structure": f"({len(sample)},{probabilities.shape[1]})",
        "prediction_sample": flat_if_single(probabilities.astype(np.float64).tolist()),
        "model_name": dataplane.model_name,
        "model_sha256": dataplane.classifier.sha256,
        "model_file": dataplane.classifier.model_path.name,
        "output_kind": dataplane.classifier.signature.output_kind.value,
        "labels": list(dataplane.labels),
        "heldout_accuracy": dataplane.card.heldout_accuracy if dataplane.card else None,
    }
    return orjson.dumps(metadata)
