"""行（JSON の値）をモデルの入力テンソルにする検証（シグネチャが決める規則）。

1 入力のモデル：行はその入力の 1 要素（[N, 4] なら長さ 4 のリスト、[N, 1] の文字列なら ["文"]）。
複数入力のモデル：行は入力名をキーとするオブジェクト（{"age": 55, "plan": "basic"}）。
誤りは場所（loc）と理由を付けた InvalidInputError にする。
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model_in_image.errors import InvalidInputError
from model_in_image.model.onnx_model import Feeds
from model_in_image.model.signature import Signature, TensorSpec

Loc = tuple[str | int, ...]
FLOAT32_MAX = float(np.finfo(np.float32).max)
RANGE_MESSAGE = "value must be a finite number within the float32 range"
# これ以下の値の数なら範囲の検査を Python で行う（それより大きければ numpy がはるかに速い）
SMALL_INPUT_VALUES = 64


def check_count(rows: Sequence[Any], max_rows: int, loc: Loc) -> None:
    """行数が 1 以上・上限以下か。"""
    if len(rows) == 0:  # numpy の配列も受け付ける（配列の真偽値は曖昧）
        raise InvalidInputError.single(loc, "data must contain at least one row", "too_short")
    if len(rows) > max_rows:
        raise InvalidInputError.single(
            loc, f"too many rows: {len(rows)} > limit {max_rows}", "too_long"
        )


def float_matrix(rows: Sequence[Sequence[float]], width: int, dtype: Any, loc: Loc) -> Any:
    """[N, 幅] の実数の行列（速い経路：型は JSON の解析で確かめ済み）。"""
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InvalidInputError.single(
                (*loc, i), f"row {i} has {len(row)} values; the model expects {width}"
            )
    if isinstance(rows, np.ndarray) or len(rows) * width > SMALL_INPUT_VALUES:
        array = np.array(rows, dtype=np.float64)
        magnitude = np.abs(array)
        if not (magnitude <= FLOAT32_MAX).all():  # NaN もここで拒否される
            flat = int(np.argmax(~(magnitude <= FLOAT32_MAX)))
            raise InvalidInputError.single((*loc, *divmod(flat, width)), RANGE_MESSAGE)
        return array.astype(dtype, copy=False)
    # numpy の ufunc を 1 回でも呼ぶと直後の推論が遅くなるため、小さな入力は Python で確かめる
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
                raise InvalidInputError.single((*loc, i, j), RANGE_MESSAGE)
    return np.array(rows, dtype=dtype)


def to_feeds(rows: Sequence[Any], signature: Signature, loc: Loc) -> Feeds:
    """行をすべての入力のテンソルにする（行数の確認は呼び出し側）。"""
    if len(signature.inputs) == 1:
        spec = signature.inputs[0]
        return {spec.name: tensor(rows, spec, loc)}
    names = [spec.name for spec in signature.inputs]
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInputError.single(
                (*loc, i),
                f"row {i} must be an object keyed by input name ({', '.join(names)}); "
                f"got {type(row).__name__}",
                "dict_type",
            )
        unknown = [key for key in row if key not in columns]
        if unknown:
            raise InvalidInputError.single(
                (*loc, i, str(unknown[0])),
                f"unknown input {unknown[0]!r}; the model's inputs are {', '.join(names)}",
                "extra_forbidden",
            )
        for name in names:
            if name not in row:
                raise InvalidInputError.single(
                    (*loc, i, name), f"missing input {name!r}", "missing"
                )
            columns[name].append(row[name])
    feeds: Feeds = {}
    for spec in signature.inputs:
        feeds[spec.name] = tensor(columns[spec.name], spec, loc, key=spec.name)
    return feeds


def tensor(values: Sequence[Any], spec: TensorSpec, loc: Loc, key: str | None = None) -> Any:
    """1 入力分の値（行の並び）を検証してその型の配列にする。"""
    row_shape = spec.row_shape
    if row_shape == (1,):  # [N, 1] の入力は行ごとにスカラーでもよい
        values = [v if isinstance(v, list) else [v] for v in values]
    checker = _CHECKERS[spec.dtype.kind if not spec.is_string else "U"]
    for i, value in enumerate(values):
        where = (*loc, i) if key is None else (*loc, i, key)
        _walk(value, len(row_shape), checker, spec, where)
    try:
        array = np.array(values, dtype=object if spec.is_string else spec.dtype)
    except (ValueError, OverflowError) as exc:
        raise InvalidInputError.single(loc, f"input {spec.name!r}: {exc}") from None
    expected = tuple(row_shape)
    got = array.shape[1:]
    if len(got) != len(expected) or any(
        e is not None and e != g for e, g in zip(expected, got, strict=True)
    ):
        dims = ", ".join("N" if d is None else str(d) for d in expected)
        raise InvalidInputError.single(
            loc if key is None else (*loc, 0, key),
            f"input {spec.name!r} expects rows of shape [{dims}]; got {list(got)}",
        )
    return array


def _walk(value: Any, depth: int, checker: Any, spec: TensorSpec, loc: Loc) -> None:
    """入れ子のリストをたどり、葉の型と範囲を確かめる（不揃いな長さは後の形の確認で拒否）。"""
    if depth == 0:
        checker(value, spec, loc)
        return
    if not isinstance(value, list):
        raise InvalidInputError.single(
            loc, f"input {spec.name!r} expects a list here; got {type(value).__name__}", "list_type"
        )
    for j, item in enumerate(value):
        _walk(item, depth - 1, checker, spec, (*loc, j))


def _float(value: Any, spec: TensorSpec, loc: Loc) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError.single(
            loc, f"input {spec.name!r} expects a number; got {type(value).__name__}", "float_type"
        )
    limit = FLOAT32_MAX if spec.dtype.itemsize <= 4 else float("inf")
    if spec.dtype.itemsize == 2:
        limit = float(np.finfo(np.float16).max)
    if not -limit <= value <= limit:  # NaN は比較が偽になり拒否される
        raise InvalidInputError.single(
            loc, f"value must be a finite number within the {spec.dtype.name} range"
        )


def _int(value: Any, spec: TensorSpec, loc: Loc) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError.single(
            loc,
            f"input {spec.name!r} expects an integer ({spec.element}); got {type(value).__name__}",
            "int_type",
        )
    info = np.iinfo(spec.dtype)
    if not info.min <= value <= info.max:
        raise InvalidInputError.single(
            loc,
            f"input {spec.name!r}: value {value} is outside the {spec.element} range "
            f"[{info.min}, {info.max}]",
        )


def _bool(value: Any, spec: TensorSpec, loc: Loc) -> None:
    if not isinstance(value, bool):
        raise InvalidInputError.single(
            loc,
            f"input {spec.name!r} expects true or false; got {type(value).__name__}",
            "bool_type",
        )


def _str(value: Any, spec: TensorSpec, loc: Loc) -> None:
    if not isinstance(value, str):
        raise InvalidInputError.single(
            loc, f"input {spec.name!r} expects a string; got {type(value).__name__}", "string_type"
        )


_CHECKERS = {"f": _float, "i": _int, "u": _int, "b": _bool, "U": _str}
