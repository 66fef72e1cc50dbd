"""入力を読む：形式の判定、見出し、行番号つきのチャンク（CSV・JSON Lines・シードの JSON・Parquet）。

行の解釈は formats が受け持つ。
"""

from __future__ import annotations

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

from model_in_image.batch.base import STDIO, BatchError, require_pyarrow
from model_in_image.batch.formats import MAX_LINE_BYTES, looks_like_header, split_header

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

    numbers: list[int]
    items: Sequence[Any]  # 行のバイト列・JSON の値、または Arrow の RecordBatch（Parquet）


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
    """開いた入力：チャンクの列、形式、見出し（CSV の見出し行・Parquet の列名）、進み具合。"""

    chunks: Iterator[Chunk]
    format: InputFormat
    header: list[str] | None
    total: int | None
    unit: str
    position: Callable[[], int]
    schema: Any = None  # Parquet の列の型（pyarrow の Schema）


def open_source(
    path: str,
    fmt: InputFormat,
    chunk_rows: int,
    stack: ExitStack,
    header: bool | None = None,
    row_groups: Sequence[int] | None = None,
) -> Source:
    """入力（ファイルまたは標準入力 -）を開き、形式を決めてチャンクの列にする。

    header は CSV の見出し行（None は自動：最初の行のどのセルも数値でなければ見出し）。
    row_groups は Parquet の読む行グループ（None はすべて。行番号はファイルの中の番号）。
    """
    fmt = input_format(path, fmt)
    if fmt is InputFormat.PARQUET:
        return _parquet_source(path, chunk_rows, row_groups)
    raw = sys.stdin.buffer if path == STDIO else stack.enter_context(_open_binary(path))
    head = _sniff(raw)
    if head.startswith(BOM):
        head = head[len(BOM) :]
    if fmt is InputFormat.AUTO:
        fmt = _guess(head)
    replay = _Replay(head, raw)
    stream = io.BufferedReader(replay, buffer_size=SNIFF_BYTES)
    total = None if path == STDIO else _size(path)
    names: list[str] | None = None
    if fmt is InputFormat.JSON:
        chunks = _batched(_seed_rows(stream, head), chunk_rows)
    else:
        lines = _numbered_lines(stream)
        if fmt is InputFormat.CSV:
            names, lines = _header(lines, header)
        chunks = _batched(lines, chunk_rows)
    return Source(chunks, fmt, names, total, "B", lambda: replay.consumed)


def input_format(path: str, fmt: InputFormat) -> InputFormat:
    """auto なら拡張子から形式を決める（分からなければ auto のまま：内容で決める）。"""
    if fmt is InputFormat.AUTO and path != STDIO:
        return _SUFFIX_INPUT.get(Path(path).suffix.lower(), InputFormat.AUTO)
    return fmt


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


def _header(
    lines: Iterator[tuple[int, bytes | None]], header: bool | None
) -> tuple[list[str] | None, Iterator[tuple[int, bytes | None]]]:
    """見出し行を読む（header が None なら、最初の行のどのセルも数値でなければ見出し）。"""
    if header is False:
        return None, lines
    first = next(lines, None)
    if first is None:
        return None, lines
    cells = split_header(first[1])
    if cells is not None and (header or looks_like_header(cells)):
        return cells, lines
    if header:
        raise BatchError(f"cannot read the header line {first[0]} (not UTF-8 or too long)")
    return None, itertools.chain([first], lines)


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


def _parquet_source(path: str, chunk_rows: int, row_groups: Sequence[int] | None) -> Source:
    """Parquet（pyarrow が要る：`parquet` extra）。チャンクは RecordBatch、見出しは列名。"""
    if path == STDIO:
        raise BatchError("Parquet input must be a file, not standard input")
    pq, pa = require_pyarrow()
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise BatchError(f"cannot read Parquet input {path}: {exc}") from None
    schema = parquet.schema_arrow
    groups = list(range(parquet.num_row_groups)) if row_groups is None else list(row_groups)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    done = [0]

    def chunks() -> Iterator[Chunk]:
        for group in groups:  # 行番号はファイルの中の番号（行グループごとのパーティションでも）
            start = sum(sizes[:group])
            for batch in parquet.iter_batches(batch_size=chunk_rows, row_groups=[group]):
                done[0] += batch.num_rows
                yield Chunk(list(range(start + 1, start + batch.num_rows + 1)), batch)
                start += batch.num_rows

    total = sum(sizes[i] for i in groups)
    names = list(schema.names)
    return Source(chunks(), InputFormat.PARQUET, names, total, "rows", lambda: done[0], schema)
