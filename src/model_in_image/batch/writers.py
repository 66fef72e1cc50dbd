"""結果を書く：ラベルとクラスごとの確率（proba_<名前>）を入力の順に CSV・JSON Lines・Parquet へ。

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
from model_in_image.dataplane import DataPlane
from model_in_image.runtime import FloatArray

PROBA_PREFIX = "proba_"


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
    """推論結果の書き手（ラベルとクラスごとの確率の列、入力の順）。"""

    def write(self, labels: list[str], probabilities: FloatArray) -> None:
        """1 チャンク分を書く。"""

    def close(self) -> None:
        """書き終える。"""


def column_names(classes: Sequence[str]) -> list[str]:
    """出力の列名：label と、クラスごとの proba_<ラベル名>。"""
    return ["label", *(PROBA_PREFIX + name for name in classes)]


def _value_rows(probabilities: FloatArray) -> list[bytes]:
    """確率の行を "p0,p1,..." のバイト列にする（orjson：float32 は最短の表記）。"""
    body = orjson.dumps(np.ascontiguousarray(probabilities), option=orjson.OPT_SERIALIZE_NUMPY)
    return body[2:-2].split(b"],[")


class CsvWriter:
    """CSV（見出し行つき、各行は改行で終わる）。"""

    def __init__(self, out: BinaryIO, classes: Sequence[str]) -> None:
        self._out = out
        self._labels = {name: _csv_line([name]).rstrip(b"\n") for name in classes}
        out.write(_csv_line(column_names(classes)))

    def write(self, labels: list[str], probabilities: FloatArray) -> None:
        encoded = self._labels
        rows = _value_rows(probabilities)
        self._out.write(
            b"".join([b"%s,%s\n" % (encoded[n], r) for n, r in zip(labels, rows, strict=True)])
        )

    def close(self) -> None:
        self._out.flush()


def _csv_line(cells: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode()


class JsonLinesWriter:
    """JSON Lines（1 行 1 オブジェクト：{"label": ..., "proba_<ラベル名>": ...}）。"""

    def __init__(self, out: BinaryIO, classes: Sequence[str]) -> None:
        self._out = out
        self._labels = {name: orjson.dumps(name).replace(b"%", b"%%") for name in classes}
        keys = [orjson.dumps(name).replace(b"%", b"%%") for name in column_names(classes)]
        self._template = b"{" + b",".join(key + b":%s" for key in keys) + b"}\n"

    def write(self, labels: list[str], probabilities: FloatArray) -> None:
        template, encoded = self._template, self._labels
        rows = _value_rows(probabilities)
        self._out.write(
            b"".join(
                [template % (encoded[n], *r.split(b",")) for n, r in zip(labels, rows, strict=True)]
            )
        )

    def close(self) -> None:
        self._out.flush()


class ParquetWriter:
    """Parquet（pyarrow が要る）。確率の列はモデルの出力と同じ数値型。"""

    def __init__(self, path: Path, classes: Sequence[str], dtype: np.dtype[Any]) -> None:
        pq, pa = require_pyarrow()
        self._pa = pa
        self._names = column_names(classes)
        value_type = pa.from_numpy_dtype(dtype)
        schema = pa.schema(
            [(self._names[0], pa.string())] + [(n, value_type) for n in self._names[1:]]
        )
        self._writer = pq.ParquetWriter(path, schema)

    def write(self, labels: list[str], probabilities: FloatArray) -> None:
        columns = [self._pa.array(labels, self._pa.string()), *probabilities.T]
        self._writer.write_table(self._pa.table(columns, schema=self._writer.schema))

    def close(self) -> None:
        self._writer.close()


class OutputTarget:
    """出力先：ファイルなら同じフォルダーの一時ファイルに書き、成功したら置き換える。"""

    def __init__(self, path: str) -> None:
        self.path = path
        self._temp: Path | None = None
        self._handle: IO[bytes] | None = None

    def writer(self, fmt: OutputFormat, dataplane: DataPlane) -> Writer:
        """形式（auto なら拡張子から）に合った書き手を作る。"""
        if fmt is OutputFormat.AUTO:
            suffix = "" if self.path == STDIO else Path(self.path).suffix.lower()
            fmt = _SUFFIX_OUTPUT.get(suffix, OutputFormat.CSV)
        classes = dataplane.labels
        if fmt is OutputFormat.PARQUET:
            if self.path == STDIO:
                raise BatchError("Parquet output must be a file (-o PATH), not standard output")
            return ParquetWriter(self._temp_path(), classes, dataplane.sample_probabilities.dtype)
        out: BinaryIO = sys.stdout.buffer
        if self.path != STDIO:
            out = self._handle = self._open(self._temp_path())
        return CsvWriter(out, classes) if fmt is OutputFormat.CSV else JsonLinesWriter(out, classes)

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
