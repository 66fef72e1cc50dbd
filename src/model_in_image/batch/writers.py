"""結果を書く：残した入力の列と推論の列（outputs）を入力の順に CSV・JSON Lines・Parquet へ。

ファイルへの出力は同じフォルダーの一時ファイルに書き、最後まで成功したときだけ置き換える。
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

import numpy as np
import orjson

from model_in_image.batch.base import STDIO, BatchError, require_pyarrow
from model_in_image.batch.outputs import Block
from model_in_image.model.onnx_model import Array


class OutputFormat(StrEnum):
    """出力の形式（auto は出力ファイルの拡張子、標準出力なら CSV）。"""

    AUTO = "auto"
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


_SUFFIX_OUTPUT = {
    ".jsonl": OutputFormat.JSONL,
    ".ndjson": OutputFormat.JSONL,
    ".parquet": OutputFormat.PARQUET,
    ".pq": OutputFormat.PARQUET,
}


class Writer(Protocol):
    """推論結果の書き手（残した入力の列と推論の列、入力の順）。"""

    def write(self, blocks: Sequence[Block]) -> None:
        """1 チャンク分の列を書く（Block の名前の順は見出しと同じ）。"""

    def close(self) -> None:
        """書き終える。"""


# 列の型：numpy の型（推論の列・CSV から残した列は object = 文字列）か pyarrow の型（Parquet の列）
ColumnType = Any
Columns = Sequence[tuple[str, ColumnType]]


def _cells(block: Block, encode: Any) -> list[list[bytes]]:
    """Block の値を、行ごとのセルのバイト列（列の順）にする。数値は orjson の最短の表記。"""
    values = block.values
    if values.dtype.kind in "fiub":
        return (
            [[cell] for cell in _numbers(values)]
            if values.ndim == 1
            else [row.split(b",") for row in _numbers(values)]
        )
    return [[encode(value) for value in row] for row in values.reshape(len(values), -1).tolist()]


def _numbers(values: Array) -> list[bytes]:
    """数値の列（[N]）は値ごと、[N, k] は行ごとの "v0,v1,..." のバイト列（orjson の最短の表記）。"""
    body = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)
    return body[1:-1].split(b",") if values.ndim == 1 else body[2:-2].split(b"],[")


class CsvWriter:
    """CSV（見出し行つき、各行は改行で終わる）。"""

    def __init__(self, out: BinaryIO, names: Sequence[str]) -> None:
        self._out = out
        self._cache: dict[Any, bytes] = {}
        out.write(_csv_line(names))

    def _encode(self, value: Any) -> bytes:
        """文字列は CSV の引用の規則で（同じ値は一度だけ）、欠損は空、ほかは JSON の表記。"""
        if isinstance(value, str):
            cell = self._cache.get(value)
            if cell is None:
                cell = _csv_line([value]).rstrip(b"\n")
                if len(self._cache) < CACHED_STRINGS:
                    self._cache[value] = cell
            return cell
        if value is None:
            return b""
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)

    def _fragments(self, block: Block) -> list[bytes]:
        """Block の行ごとの "セル,セル,..."（ラベルのように繰り返す文字列は覚えた表記で）。"""
        values = block.values
        if values.dtype.kind in "fiub":
            return _numbers(values)
        if values.ndim == 1:
            items = values.tolist()
            cache = self._cache
            try:
                return [cache[item] for item in items]
            except (KeyError, TypeError):
                return [self._encode(item) for item in items]
        return [b",".join(map(self._encode, row)) for row in values.tolist()]

    def write(self, blocks: Sequence[Block]) -> None:
        if not blocks or len(blocks[0].values) == 0:
            return
        parts = [self._fragments(block) for block in blocks]
        rows = parts[0] if len(parts) == 1 else [b",".join(row) for row in zip(*parts, strict=True)]
        self._out.write(b"\n".join(rows) + b"\n")

    def close(self) -> None:
        self._out.flush()


# CSV の書き手が覚えておく文字列の数（ラベルのように繰り返す値を毎回引用し直さない）
CACHED_STRINGS = 10_000


def _csv_line(cells: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode()


def _json_value(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


class JsonLinesWriter:
    """JSON Lines（1 行 1 オブジェクト：{"label": ..., "proba_<ラベル名>": ...}）。"""

    def __init__(self, out: BinaryIO, names: Sequence[str]) -> None:
        self._out = out
        keys = [orjson.dumps(name).replace(b"%", b"%%") for name in names]
        self._template = b"{" + b",".join(key + b":%s" for key in keys) + b"}\n"

    def write(self, blocks: Sequence[Block]) -> None:
        if not blocks or len(blocks[0].values) == 0:
            return
        template = self._template
        parts = [_cells(block, _json_value) for block in blocks]
        rows = [tuple(cell for part in row for cell in part) for row in zip(*parts, strict=True)]
        self._out.write(b"".join([template % row for row in rows]))

    def close(self) -> None:
        self._out.flush()


def arrow_type(pa: Any, kind: ColumnType) -> Any:
    """列の型を pyarrow の型にする（object は文字列）。"""
    if isinstance(kind, pa.DataType):
        return kind
    return pa.string() if kind.kind == "O" else pa.from_numpy_dtype(kind)


def arrow_arrays(pa: Any, blocks: Sequence[Block], schema: Any) -> list[Any]:
    """Block の値を、schema の型の pyarrow の配列（列の順）にする。"""
    arrays: list[Any] = []
    for block in blocks:
        values = block.values
        columns = [values] if values.ndim == 1 else list(values.T)
        for column in columns:
            kind = schema.field(len(arrays)).type
            data = column.tolist() if column.dtype.kind == "O" else column
            arrays.append(pa.array(data, type=kind))
    return arrays


class ParquetWriter:
    """Parquet（pyarrow が要る）。推論の列はモデルの出力と同じ数値型。"""

    def __init__(self, path: Path, columns: Columns) -> None:
        pq, pa = require_pyarrow()
        self._pa = pa
        schema = pa.schema([(name, arrow_type(pa, kind)) for name, kind in columns])
        self._writer = pq.ParquetWriter(path, schema)

    def write(self, blocks: Sequence[Block]) -> None:
        schema = self._writer.schema
        arrays = arrow_arrays(self._pa, blocks, schema)
        self._writer.write_table(self._pa.table(arrays, schema=schema))

    def close(self) -> None:
        self._writer.close()


class TableWriter:
    """メモリの中の pyarrow の Table に書く（表を推論する関数・Dask のパーティション）。"""

    def __init__(self, columns: Columns) -> None:
        _, pa = require_pyarrow()
        self._pa = pa
        self.schema = pa.schema([(name, arrow_type(pa, kind)) for name, kind in columns])
        self._tables: list[Any] = []

    def write(self, blocks: Sequence[Block]) -> None:
        arrays = arrow_arrays(self._pa, blocks, self.schema)
        self._tables.append(self._pa.table(arrays, schema=self.schema))

    def close(self) -> None:
        """何もしない（結果は table で受け取る）。"""

    def table(self) -> Any:
        """書いたすべての行の Table（行が無ければ列だけの空の Table）。"""
        if not self._tables:
            return self.schema.empty_table()
        return self._pa.concat_tables(self._tables)


class OutputTarget:
    """出力先：ファイルなら同じフォルダーの一時ファイルに書き、成功したら置き換える。"""

    def __init__(self, path: str) -> None:
        self.path = path
        self._temp: Path | None = None
        self._handle: IO[bytes] | None = None

    def writer(self, fmt: OutputFormat, columns: Columns) -> Writer:
        """形式（auto なら拡張子から）に合った書き手を作る（columns は列の名前と型）。"""
        if fmt is OutputFormat.AUTO:
            suffix = "" if self.path == STDIO else Path(self.path).suffix.lower()
            fmt = _SUFFIX_OUTPUT.get(suffix, OutputFormat.CSV)
        if fmt is OutputFormat.PARQUET:
            if self.path == STDIO:
                raise BatchError("Parquet output must be a file (-o PATH), not standard output")
            return ParquetWriter(self._temp_path(), columns)
        out: BinaryIO = sys.stdout.buffer
        if self.path != STDIO:
            out = self._handle = self._open(self._temp_path())
        names = [name for name, _ in columns]
        return CsvWriter(out, names) if fmt is OutputFormat.CSV else JsonLinesWriter(out, names)

    def _open(self, path: Path) -> BinaryIO:
        try:
            return open(path, "wb")
        except OSError as exc:
            raise BatchError(f"cannot write output {self.path}: {exc.strerror or exc}") from None

    def _temp_path(self) -> Path:
        """書き込み先。通常のファイルなら隣の一時ファイル、/dev/null やパイプならそのもの。"""
        target = Path(self.path)
        if target.is_symlink() or (target.exists() and not target.is_file()):
            return target
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".part", dir=target.parent
            )
        except OSError as exc:
            raise BatchError(f"cannot write output {self.path}: {exc.strerror or exc}") from None
        os.close(fd)
        self._temp = Path(name)
        return self._temp

    def commit(self) -> None:
        """書き終えたファイルを出力先に置く（一時ファイルからの置き換え）。"""
        if self._handle is not None:
            self._handle.close()
        if self._temp is not None:
            # mkstemp は 0600 で作る：ふつうに開いたファイルと同じく umask に従わせる
            os.chmod(self._temp, 0o666 & ~current_umask())
            os.replace(self._temp, self.path)
            self._temp = None

    def discard(self) -> None:
        """失敗したとき：一時ファイルを消す（commit の後は何もしない）。"""
        if self._handle is not None:
            self._handle.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)


def current_umask() -> int:
    """このプロセスの umask（読むには一度設定し直すしかない）。"""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
