"""テキストの行の形式：CSV・JSON Lines・シードの JSON ボディの行を数値にする。

各形式は一括の速い道（parse_all）と 1 行ずつの遅い道（parse_one）を持つ。検証はしない
（BatchModel.check が行う）。Parquet と DataFrame は tables が受け持つ。
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
from model_in_image.batch.model import BatchModel
from model_in_image.batch.scored import Problem, Scored, predicted
from model_in_image.runtime import FloatArray

# これより長い行は読まずに不正な行として扱う（改行の無い巨大なファイルでもメモリを一定に保つ）
MAX_LINE_BYTES = 1 << 20
SEED_SHAPE = 'JSON input must be {"data": [[...], ...]} or [[...], ...]'


class RowFormat(Protocol):
    """形式ごとの行の解釈（一括の速い道と、1 行ずつの遅い道）。"""

    unit: str  # エラーの場所の呼び方（"line" または "row"）

    def parse_all(self, items: Sequence[Any]) -> FloatArray | None:
        """チャンク全体を数値の配列にする。どこかに不正な行があれば None。"""

    def parse_one(self, item: Any) -> Sequence[float]:
        """1 行を数値の並びにする（不正なら RowError）。"""

    def text(self, item: Any) -> str:
        """エラーファイルに残す、元の行の文字列。"""

    def input_column(self, feature: int) -> int:
        """特徴量の番号（1 始まり）に当たる入力の列番号（1 始まり）。"""


class _InOrder:
    """特徴量を入力の順に並べる形式（列番号は特徴量の番号そのもの）。"""

    def input_column(self, feature: int) -> int:
        return feature


class _LineFormat(_InOrder):
    """1 行 1 レコードのテキスト形式の共通部分（長すぎる行は None で届く）。"""

    unit = "line"

    def text(self, item: bytes | None) -> str:
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
    """カンマ区切り（見出し行は読み手が取り除く）。一括は np.loadtxt、1 行ずつは csv。

    order は特徴量の順に並べた列番号（見出しの名前で対応させたとき）、columns は見出しの列数。
    """

    def __init__(self, order: list[int] | None = None, columns: int = 0) -> None:
        self._order = order
        self._columns = columns

    def parse_all(self, items: Sequence[bytes | None]) -> FloatArray | None:
        try:
            text = b"".join(items).decode("utf-8")  # type: ignore[arg-type]
            if self._order is not None and (
                '"' in text or text.count(",") != len(items) * (self._columns - 1)
            ):
                return None  # 列数の確かめは 1 行ずつの道で（usecols は余る列を黙って捨てる）
            return np.loadtxt(
                io.StringIO(text),
                delimiter=",",
                quotechar='"',
                comments=None,
                dtype=np.float64,
                ndmin=2,
                usecols=self._order,
            )
        except (
            TypeError,
            ValueError,
        ):  # None（長すぎる行）・UTF-8 でない・数値でない・列数の不揃い
            return None

    def parse_one(self, item: bytes | None) -> list[float]:
        try:
            (cells,) = csv.reader([self._decoded(item)])
        except csv.Error as exc:
            raise RowError(f"not a CSV row: {exc}") from None
        if self._order is None:
            return [parse_number(cell, column) for column, cell in enumerate(cells, 1)]
        if len(cells) != self._columns:
            raise RowError(f"row has {len(cells)} values; the header has {self._columns}")
        return [parse_number(cells[i], i + 1) for i in self._order]

    def input_column(self, feature: int) -> int:
        """特徴量の番号（1 始まり）から入力の列番号（1 始まり）。"""
        return feature if self._order is None else self._order[feature - 1] + 1


def parse_number(cell: str, column: int) -> float:
    """CSV の 1 セルを数値にする（np.loadtxt と同じく桁区切りの _ は認めない）。"""
    text = cell.strip()
    try:
        if "_" in text:
            raise ValueError
        return float(text)
    except ValueError:
        raise RowError(f"{cell!r} is not a number", column) from None


# msgspec の検証エラー（例 "Expected `float`, got `str` - at `$[1]`"）の理由と位置
MSGSPEC_PATH = re.compile(r"^(?P<reason>.*) - at `\$\[(?P<index>\d+)\]`$")


class JsonLinesFormat(_LineFormat):
    """1 行に 1 つの JSON 配列（例 [5.1, 3.5, 1.4, 0.2]）。真偽値・文字列は数値として認めない。"""

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(list[float])

    def parse_all(self, items: Sequence[bytes | None]) -> FloatArray | None:
        decode = self._decoder.decode
        try:
            return np.array([decode(item) for item in items], dtype=np.float64)  # type: ignore[arg-type]
        except (TypeError, ValueError, msgspec.DecodeError):  # 不揃いの行も ValueError
            return None

    def parse_one(self, item: bytes | None) -> list[float]:
        text = self._decoded(item)
        try:
            return self._decoder.decode(text)
        except msgspec.ValidationError as exc:
            found = MSGSPEC_PATH.search(str(exc))
            if found is None:
                raise RowError(f"must be a JSON array of numbers: {exc}") from None
            raise RowError(found["reason"], int(found["index"]) + 1) from None
        except msgspec.DecodeError as exc:
            raise RowError(f"not valid JSON: {exc}") from None


class SeedJsonFormat(_InOrder):
    """シードの JSON ボディ {"data": [[...], ...]}（または [[...], ...]）の 1 行（data の要素）。"""

    unit = "row"

    def parse_all(self, items: Sequence[Any]) -> FloatArray | None:
        if not all(_is_number_list(item) for item in items):
            return None
        try:
            return np.array(items, dtype=np.float64)
        except ValueError:  # 不揃いの行
            return None

    def parse_one(self, item: Any) -> Sequence[float]:
        if not isinstance(item, list):
            raise RowError(f"must be a list of numbers ({SEED_SHAPE})")
        for column, value in enumerate(item, 1):
            if not _is_number(value):
                raise RowError(f"every value must be a number, got {value!r}", column)
        return item

    def text(self, item: Any) -> str:
        return orjson.dumps(item).decode()


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _is_number_list(item: Any) -> bool:
    return type(item) is list and all(_is_number(value) for value in item)


def score_lines(model: BatchModel, fmt: RowFormat, items: Sequence[Any]) -> Scored:
    """テキストの行のチャンクを推論する（一括で不正があれば 1 行ずつ調べて不正な行を除く）。"""
    array = fmt.parse_all(items)
    features = model.check(array) if array is not None else None
    if features is not None:
        return predicted(model, features)
    valid: list[Sequence[float]] = []
    kept: list[int] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        try:
            row = fmt.parse_one(item)
        except RowError as exc:
            problems.append(Problem(index, exc.column, exc.reason))
            continue
        try:
            model.check_row(row)
        except RowError as exc:
            column = None if exc.column is None else fmt.input_column(exc.column)
            problems.append(Problem(index, column, exc.reason))
            continue
        valid.append(row)
        kept.append(index)
    checked = model.check(valid) if valid else np.empty((0, model.width))
    assert checked is not None  # どの行も 1 行ずつの検証を通った
    return predicted(model, checked, problems, np.array(kept, dtype=np.intp))
