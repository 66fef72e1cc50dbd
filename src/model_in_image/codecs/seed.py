"""シード API のワイヤー形式：{"data": [...]} ⇄ 行、{"prediction": ...} の直列化。

実数 1 入力のモデルは行を数のリストとして型付きで解析する（速い経路）。ほかのモデルは
任意の JSON の値として解析し、検証はデータプレーン（シグネチャの規則）に任せる。
"""

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
    """POST /predict のボディ（実数 1 入力のモデル：{"data": [[...], ...]}）。"""

    data: list[list[float]]


class AnyPredictBody(msgspec.Struct):
    """POST /predict のボディ（ほかのモデル：行は任意の JSON の値）。"""

    data: list[Any]


_DECODER = msgspec.json.Decoder(PredictBody)
_ANY_DECODER = msgspec.json.Decoder(AnyPredictBody)


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


def decode_rows(body: bytes, *, numeric: bool = True) -> list[Any]:
    """JSON ボディを解析する（numeric なら数の行列として型検証：真偽値・文字列・null は 422）。

    壊れた JSON は 400。
    """
    try:
        if numeric:
            return decode_json(_DECODER, body, prefix="Invalid JSON").data
        return decode_json(_ANY_DECODER, body, prefix="Invalid JSON").data
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
    """{"prediction": [...]}（1 行ならシードと同じ平らな形）。確率以外の値も同じ形。"""
    if len(probabilities) <= SMALL_BATCH_ROWS or probabilities.dtype.kind not in "fiub":
        rows = probabilities.tolist()  # float32 の値はそのまま float64 で表せる
        return orjson.dumps({"prediction": flat_if_single(rows)})
    values = probabilities.astype(np.float64) if probabilities.dtype.kind == "f" else probabilities
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
    """/metadata：シードの項目（型・形・サンプルとその推論結果）とモデルの情報。

    種類（kind）・すべての入出力・後処理・クラス名を含む。
    """
    model = dataplane.model
    sample = dataplane.sample
    values = dataplane.sample_values
    inputs = model.signature.inputs
    single = len(inputs) == 1
    metadata: dict[str, Any] = {
        "data_type": inputs[0].dtype.name if single else "object",
        "data_structure": _structure((len(sample), *_row_dims(inputs[0].row_shape)))
        if single
        else f"({len(sample)},{{{','.join(spec.name for spec in inputs)}}})",
        "data_sample": sample,
        "prediction_type": str(values.dtype),
        "prediction_structure": _structure(values.shape),
        "prediction_sample": flat_if_single(values.tolist()),
        "model_name": dataplane.model_name,
        "model_sha256": model.sha256,
        "model_file": model.model_path.name,
        "kind": model.kind.value,
        "output_kind": "zipmap" if model.heads.zipmap else "tensor",
        "postprocess": model.postprocess.value,
        "inputs": [spec.describe() for spec in inputs],
        "outputs": [spec.describe() for spec in model.signature.outputs],
        "prediction_output": model.heads.primary,
        "fixed_batch_size": model.fixed_batch,
        "labels": list(dataplane.labels),
        "heldout_accuracy": dataplane.card.heldout_accuracy if dataplane.card else None,
    }
    return orjson.dumps(metadata)


def _row_dims(shape: tuple[int | None, ...]) -> tuple[int | str, ...]:
    return tuple("N" if d is None else d for d in shape)


def _structure(shape: tuple[Any, ...]) -> str:
    """シードの形の表記（例: (1,4)）。"""
    return "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
