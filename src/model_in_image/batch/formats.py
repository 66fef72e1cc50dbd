"""行の形式：CSV・JSON Lines・シードの JSON ボディ・Arrow（Parquet）のチャンクをモデルの入力にする。

各形式は実数 1 入力のモデルのための一括の速い道（数値の行列）と、どのモデルにも使える道
（値を入力の型にして Decoder で検証）を持つ。検証の規則は DataPlane.validate だけが持つ。
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import numpy as np
import orjson

from model_in_image.batch.base import RowError
from model_in_image.batch.columns import ColumnPlan
from model_in_image.batch.decode import Decoded, Decoder, IndexArray, Problem
from model_in_image.batch.outputs import Block

# これより長い行は読まずに不正な行として扱う（改行の無い巨大なファイルでもメモリを一定に保つ）
MAX_LINE_BYTES = 1 << 20
SEED_SHAPE = 'JSON input must be {"data": [[...], ...]} or [[...], ...]'


class RowFormat(Protocol):
    """形式ごとのチャンクの解釈。"""

    unit: str  # エラーの場所の呼び方（"line" または "row"）

    def decode(self, items: Sequence[Any]) -> Decoded:
        """チャンクを検証済みの入力と不正な行にする。"""

    def text(self, items: Sequence[Any], index: int) -> str:
        """エラーファイルに残す、元の行の文字列。"""


def kept_columns(plan: ColumnPlan | None, rows: Sequence[Any], valid: IndexArray) -> list[Block]:
    """有効な行の、残す入力の列（rows は入力の列の順の値の行）。"""
    if plan is None or not plan.keep:
        return []
    picked = [rows[i] for i in valid.tolist()]
    return [
        Block((name,), np.array([row[source] for row in picked], dtype=object))
        for name, source in plan.keep
    ]


class _LineFormat:
    """1 行 1 レコードのテキスト形式の共通部分（長すぎる行は None で届く）。"""

    unit = "line"

    def text(self, items: Sequence[bytes | None], index: int) -> str:
        item = items[index]
        if item is None:
            return f"<line longer than {MAX_LINE_BYTES} bytes>"
        return item.decode("utf-8", errors="replace").rstrip("\r\n")

    @staticmethod
    def _decoded(item: bytes | None) -> str:
        if item is None:
            raise RowError(f"line is longer than {MAX_LINE_BYTES} bytes")
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RowError(f"not UTF-8 at byte {exc.start}") from None


class CsvFormat(_LineFormat):
    """カンマ区切り（見出し行は読み手が取り除く）。一括は np.loadtxt、1 行ずつは csv。"""

    def __init__(self, decoder: Decoder, plan: ColumnPlan) -> None:
        self._decoder = decoder
        self._plan = plan
        self._fast = decoder.numeric and not plan.keep
        self._identity = plan.sources == tuple(range(plan.width))

    def decode(self, items: Sequence[bytes | None]) -> Decoded:
        if self._fast:
            matrix = _loadtxt(items)
            if matrix is not None and matrix.shape[1] == self._plan.width:
                features = matrix if self._identity else matrix[:, self._plan.sources]
                decoded = self._decoder.matrix(features)
                if decoded is not None:
                    return decoded
        rows = [self._cells(index, item) for index, item in enumerate(items)]
        decoded = self._decoder.cells(rows)
        decoded.kept = kept_columns(self._plan, rows, decoded.valid)
        return decoded

    def _cells(self, index: int, item: bytes | None) -> list[str] | Problem:
        try:
            (cells,) = csv.reader([self._decoded(item)])
        except RowError as exc:
            return Problem(index, exc.reason)
        except csv.Error as exc:
            return Problem(index, f"not a CSV row: {exc}")
        return cells


def _loadtxt(items: Sequence[bytes | None]) -> Any:
    """チャンク全体を実数の行列にする（どこかの行が読めなければ None）。"""
    try:
        text = b"".join(items).decode("utf-8")  # type: ignore[arg-type]
        return np.loadtxt(
            io.StringIO(text),
            delimiter=",",
            quotechar='"',
            comments=None,
            dtype=np.float64,
            ndmin=2,
        )
    except (TypeError, ValueError):  # None（長すぎる行）・UTF-8 でない・数値でない・列数の不揃い
        return None


def split_header(line: bytes | None) -> list[str] | None:
    """CSV の 1 行をセルにする（読めなければ None）。"""
    if line is None:
        return None
    try:
        (cells,) = csv.reader([line.decode("utf-8")])
    except (UnicodeDecodeError, ValueError):
        return None
    return [cell.strip() for cell in cells]


def looks_like_header(cells: Sequence[str]) -> bool:
    """どのセルも数値でなければ見出し行とみなす。"""
    for cell in cells:
        try:
            float(cell.strip())
        except ValueError:
            continue
        return False
    return True


# msgspec の検証エラー（例 "Expected `float`, got `str` - at `$[1]`"）の理由と位置
MSGSPEC_PATH = re.compile(r"^(?P<reason>.*) - at `\$\[(?P<index>\d+)\]`$")


class JsonLinesFormat(_LineFormat):
    """1 行に 1 つの JSON の値（[5.1, 3.5, 1.4, 0.2]、複数入力なら入力名をキーとするオブジェクト）。

    実数 1 入力のモデルでは真偽値・文字列を数値として認めない。
    """

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._floats = msgspec.json.Decoder(list[float])
        self._any = msgspec.json.Decoder()

    def decode(self, items: Sequence[bytes | None]) -> Decoded:
        if self._decoder.numeric:
            decode = self._floats.decode
            try:
                matrix = np.array([decode(item) for item in items], dtype=np.float64)  # type: ignore[arg-type]
            except (TypeError, ValueError, msgspec.DecodeError):  # 不揃いの行も ValueError
                matrix = None
            decoded = None if matrix is None else self._decoder.matrix(matrix)
            if decoded is not None:
                return decoded
        return self._decoder.values([self._value(i, item) for i, item in enumerate(items)])

    def _value(self, index: int, item: bytes | None) -> Any:
        """1 行を値にする（読めない行は Problem）。実数 1 入力のモデルは数の配列だけを認める。"""
        decoder = self._floats if self._decoder.numeric else self._any
        try:
            return decoder.decode(self._decoded(item))
        except RowError as exc:
            return Problem(index, exc.reason)
        except msgspec.ValidationError as exc:
            found = MSGSPEC_PATH.search(str(exc))
            if found is None:
                return Problem(index, f"must be a JSON array of numbers: {exc}")
            return Problem(index, found["reason"], int(found["index"]) + 1)
        except msgspec.DecodeError as exc:
            return Problem(index, f"not valid JSON: {exc}")


class SeedJsonFormat:
    """シードの JSON ボディ {"data": [[...], ...]}（または [[...], ...]）の 1 行（data の要素）。"""

    unit = "row"

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder

    def decode(self, items: Sequence[Any]) -> Decoded:
        if not self._decoder.numeric:
            return self._decoder.values(items)
        if all(_is_number_list(item) for item in items):
            try:
                decoded = self._decoder.matrix(np.array(items, dtype=np.float64))
            except ValueError:  # 不揃いの行
                decoded = None
            if decoded is not None:
                return decoded
        return self._decoder.values([_numbers(i, item) for i, item in enumerate(items)])

    def text(self, items: Sequence[Any], index: int) -> str:
        return orjson.dumps(items[index]).decode()


def _numbers(index: int, item: Any) -> Any:
    """実数 1 入力のモデルの行：数のリストでなければ Problem。"""
    if not isinstance(item, list):
        return Problem(index, f"must be a list of numbers ({SEED_SHAPE})")
    for column, value in enumerate(item, 1):
        if not _is_number(value):
            return Problem(index, f"every value must be a number, got {value!r}", column)
    return item


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _is_number_list(item: Any) -> bool:
    return type(item) is list and all(_is_number(value) for value in item)


class ArrowFormat:
    """Arrow の RecordBatch（Parquet・pandas）。列は見出し（列名）で対応させる。"""

    unit = "row"

    def __init__(self, decoder: Decoder, plan: ColumnPlan, numeric: bool) -> None:
        self._decoder = decoder
        self._plan = plan
        # 実数 1 入力のモデルで、特徴量の列がすべて数値の型なら行列の速い道
        self._fast = decoder.numeric and numeric

    def decode(self, items: Sequence[Any]) -> Decoded:
        batch: Any = items
        plan = self._plan
        if self._fast:
            columns = [batch.column(i).to_numpy(zero_copy_only=False) for i in plan.sources]
            matrix = np.column_stack(columns).astype(np.float64)
            decoded = self._decoder.matrix(matrix)
            if decoded is None:
                decoded = self._decoder.values(matrix.tolist())
        else:
            rows = list(zip(*(column.to_pylist() for column in batch.columns), strict=True))
            decoded = self._decoder.cells(rows)
        decoded.kept = [
            Block((name,), np.array(batch.column(i).take(decoded.valid).to_pylist(), dtype=object))
            for name, i in plan.keep
        ]
        return decoded

    def text(self, items: Sequence[Any], index: int) -> str:
        batch: Any = items
        (row,) = batch.slice(index, 1).to_pylist()
        return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
