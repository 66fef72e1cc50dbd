"""入力を読む：形式の判定と行番号つきのチャンク（CSV・JSON Lines・シードの JSON ボディ・Parquet）。

テキストの行の解釈は formats、Parquet（Arrow の表）は tables が受け持つ。列は見出しが
モデルの特徴量を名指すなら名前で対応させる（columns.match_columns）。
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from model_in_image.batch.base import STDIO, BatchError, RowError, require_pyarrow
from model_in_image.batch.columns import ColumnMatch, match_columns
from model_in_image.batch.formats import (
    MAX_LINE_BYTES,
    CsvFormat,
    JsonLinesFormat,
    RowFormat,
    SeedJsonFormat,
    parse_number,
    score_lines,
)
from model_in_image.batch.model import BatchModel
from model_in_image.batch.scored import Scored
from model_in_image.batch.tables import row_text, score_table, table_columns

# 形式の判定に先読みする最大バイト数（読み込みのバッファーも同じ大きさ）
SNIFF_BYTES = 1 << 16
BOM = b"\xef\xbb\xbf"
WHITESPACE = b" \t\r\n"


class InputFormat(StrEnum):
    """入力の形式（auto は拡張子、無ければ先頭の内容で決める）。"""

    AUTO = "auto"
    CSV = "csv"
    JSONL = "jsonl"
    JSON = "json"
    PARQUET = "parquet"


_SUFFIX_INPUT = {
    ".csv": InputFormat.CSV,
    ".jsonl": InputFormat.JSONL,
    ".ndjson": InputFormat.JSONL,
    ".parquet": InputFormat.PARQUET,
    ".pq": InputFormat.PARQUET,
}


@dataclass(frozen=True, slots=True)
class Chunk:
    """入力の一区切り：行番号（1 始まり）と、形式ごとの生の行。"""

    numbers: Sequence[int]
    items: Any  # 行のバイト列・JSON の値のリスト、または pyarrow の Table（Parquet）


class _Replay(io.RawIOBase):
    """先読みしたバイト列を先に返し、続きを元のストリームから読む（読んだバイト数を数える）。"""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._rest = rest
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._rest.read1(len(buffer))  # type: ignore[attr-defined]
            n = len(data)
            buffer[:n] = data
        self.consumed += n
        return n


@dataclass(slots=True)
class Source:
    """開いた入力：チャンクの列とその推論・不正な行の文字列、進み具合（バイトまたは行）。"""

    chunks: Iterator[Chunk]
    score: Callable[[Chunk], Scored]
    text: Callable[[Chunk, int], str]
    unit: str  # 不正な行の場所の呼び方（"line" または "row"）
    total: int | None
    progress_unit: str  # 進み具合の単位（"B" または "rows"）
    position: Callable[[], int]
    schema: Any = None  # 入力の列の型（Parquet だけ：--keep-input の出力に残す）


@dataclass(frozen=True, slots=True)
class Reading:
    """入力の読み方：形式・チャンクの行数・列の対応・入力の列を残すか・Parquet の行グループ。"""

    format: InputFormat = InputFormat.AUTO
    chunk_rows: int = 10_000
    columns: ColumnMatch = ColumnMatch.AUTO
    keep_input: bool = False
    row_groups: tuple[int, ...] | None = None  # Parquet の一部だけ（Dask のパーティション）


def input_format(path: str, fmt: InputFormat) -> InputFormat:
    """拡張子から決まる形式（auto のまま返れば内容で決める）。"""
    if fmt is InputFormat.AUTO and path != STDIO:
        return _SUFFIX_INPUT.get(Path(path).suffix.lower(), InputFormat.AUTO)
    return fmt


def open_source(path: str, model: BatchModel, reading: Reading, stack: ExitStack) -> Source:
    """入力（ファイルまたは標準入力 -）を開き、形式を決めてチャンクの列にする。"""
    fmt = input_format(path, reading.format)
    if fmt is InputFormat.PARQUET:
        return _parquet_source(path, model, reading)
    if reading.keep_input:
        raise BatchError("--keep-input needs Parquet input (text rows have no typed columns)")
    raw = sys.stdin.buffer if path == STDIO else stack.enter_context(_open_binary(path))
    head = _sniff(raw)
    if head.startswith(BOM):
        head = head[len(BOM) :]
    if fmt is InputFormat.AUTO:
        fmt = _guess(head)
    replay = _Replay(head, raw)
    stream = io.BufferedReader(replay, buffer_size=SNIFF_BYTES)
    total = None if path == STDIO else _size(path)
    if fmt is InputFormat.JSON:
        rows = _seed_rows(stream, head)
        row_format: RowFormat = SeedJsonFormat()
        header = None
    else:
        rows = _numbered_lines(stream)
        header = None
        if fmt is InputFormat.CSV:
            header, rows = _split_header(rows)
        row_format = JsonLinesFormat()
    order = match_columns(header, model.feature_names, reading.columns)
    if fmt is InputFormat.CSV:
        row_format = CsvFormat(order, len(header or ()))
    return Source(
        chunks=_batched(rows, reading.chunk_rows),
        score=lambda chunk: score_lines(model, row_format, chunk.items),
        text=lambda chunk, index: row_format.text(chunk.items[index]),
        unit=row_format.unit,
        total=total,
        progress_unit="B",
        position=lambda: replay.consumed,
    )


def _open_binary(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BatchError(f"cannot read input {path}: {exc.strerror or exc}") from None


def _size(path: str) -> int | None:
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    return size or None  # 0 はパイプなど（大きさが分からない）


def _sniff(raw: BinaryIO) -> bytes:
    """形式を決めるのに足りるだけ先読みする（空白でない最初の文字、それが [ なら次の文字まで）。"""
    head = b""
    while len(head) < SNIFF_BYTES:
        data = raw.read1(SNIFF_BYTES)  # type: ignore[attr-defined]
        if not data:
            break
        head += data
        text = head.lstrip(BOM + WHITESPACE)
        if text[:1] not in (b"", b"[") or text[1:].lstrip(WHITESPACE):
            break
    return head


def _guess(head: bytes) -> InputFormat:
    """先頭の内容から形式を決める：{ と [[ はシードの JSON、[ は JSON Lines、それ以外は CSV。"""
    text = head.lstrip(WHITESPACE)
    if text.startswith(b"{"):
        return InputFormat.JSON
    if text.startswith(b"["):
        return InputFormat.JSON if text[1:].lstrip().startswith(b"[") else InputFormat.JSONL
    return InputFormat.CSV


def _numbered_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(行番号, 行) を返す。空行は飛ばし、長すぎる行は None にして残りを読み捨てる。"""
    readline = stream.readline
    number = 0
    while line := readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            while line and not line.endswith(b"\n"):
                line = readline(MAX_LINE_BYTES)
            yield number, None
        elif not line.isspace():
            yield number, line


def _split_header(
    lines: Iterator[tuple[int, bytes | None]],
) -> tuple[list[str] | None, Iterator[tuple[int, bytes | None]]]:
    """最初の行のどのセルも数値でなければ見出し行：(列名, 残りの行)。無ければ (None, 全行)。"""
    first = next(lines, None)
    if first is None:
        return None, lines
    header = _header_cells(first[1]) if first[1] is not None else None
    if header is not None:
        return header, lines
    return None, itertools.chain([first], lines)


def _header_cells(line: bytes) -> list[str] | None:
    """見出し行なら列名（前後の空白を除く）、そうでなければ None。"""
    try:
        (cells,) = csv.reader([line.decode("utf-8")])
    except (UnicodeDecodeError, ValueError):
        return None
    if any(_parses(cell) for cell in cells):
        return None
    return [cell.strip() for cell in cells]


def _parses(cell: str) -> bool:
    try:
        parse_number(cell, 0)
    except RowError:
        return False
    return True


def _seed_rows(stream: BinaryIO, head: bytes) -> Iterator[tuple[int, Any]]:
    """シードの JSON ボディの data の要素を 1 つずつ読む（ijson：文書全体をメモリに載せない）。"""
    prefix = "data.item" if head.lstrip(WHITESPACE).startswith(b"{") else "item"
    number = 0
    try:
        for number, row in enumerate(ijson.items(stream, prefix, use_float=True), 1):
            yield number, row
    except ijson.JSONError as exc:
        reason = str(exc).strip().splitlines()[0]  # yajl は位置を示す図を続けて書く
        raise BatchError(f"input is not valid JSON after {number} rows: {reason}") from None


def _batched(items: Iterable[tuple[int, Any]], size: int) -> Iterator[Chunk]:
    numbers: list[int] = []
    rows: list[Any] = []
    for number, item in items:
        numbers.append(number)
        rows.append(item)
        if len(rows) == size:
            yield Chunk(numbers, rows)
            numbers, rows = [], []
    if rows:
        yield Chunk(numbers, rows)


def _parquet_source(path: str, model: BatchModel, reading: Reading) -> Source:
    """Parquet（pyarrow が要る：`parquet` extra）。特徴量の列は数値で、見出しの名前で対応させる。"""
    if path == STDIO:
        raise BatchError("Parquet input must be a file, not standard input")
    pq, pa = require_pyarrow()
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise BatchError(f"cannot read Parquet input {path}: {exc}") from None
    columns = table_columns(parquet.schema_arrow, model, reading.columns)
    groups = reading.row_groups
    metadata = parquet.metadata
    if groups is None:
        first, total = 0, metadata.num_rows
    else:
        first = sum(metadata.row_group(i).num_rows for i in range(groups[0]))
        total = sum(metadata.row_group(i).num_rows for i in groups)
    done = [0]

    def chunks() -> Iterator[Chunk]:
        batches = parquet.iter_batches(batch_size=reading.chunk_rows, row_groups=groups)
        for batch in batches:
            start = first + done[0]
            done[0] += batch.num_rows
            table = pa.Table.from_batches([batch])
            yield Chunk(range(start + 1, start + batch.num_rows + 1), table)

    def score(chunk: Chunk) -> Scored:
        return score_table(model, chunk.items, columns, keep_input=reading.keep_input)

    def text(chunk: Chunk, index: int) -> str:
        return row_text(chunk.items, columns, index)

    return Source(
        chunks(), score, text, "row", total, "rows", lambda: done[0], parquet.schema_arrow
    )
