"""入力を最後まで推論して書く（不正な行は止めるか、エラーファイルに記録して飛ばす）。

チャンクの検証と推論は formats.score_lines（テキスト）と tables.score_table（Parquet）が
同じ BatchModel で行う。1 ファイルでも、Dask のパーティションでも、この run_batch を通る。
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

import orjson

from model_in_image.batch.base import STDIO, BatchError
from model_in_image.batch.columns import ColumnMatch
from model_in_image.batch.model import BatchModel
from model_in_image.batch.progress import DEFAULT_INTERVAL_SECONDS, ProgressMode, open_progress
from model_in_image.batch.readers import Chunk, InputFormat, Reading, Source, open_source
from model_in_image.batch.scored import Problem
from model_in_image.batch.tables import DEFAULT_CHUNK_ROWS
from model_in_image.batch.writers import OutputFormat, OutputTarget, Writer

MAX_CHUNK_ROWS = 1_000_000


class ErrorLog:
    """--skip-invalid の不正な行の記録（JSON Lines：場所・理由・元の行）。最初の 1 行で開く。"""

    def __init__(self, path: str, stack: ExitStack, where: dict[str, Any] | None = None) -> None:
        self.path = path
        self.count = 0
        self._stack = stack
        self._where = where or {}
        self._out: IO[bytes] | None = None

    def record(self, unit: str, number: int, column: int | None, reason: str, text: str) -> None:
        """1 行を記録する（column は分かるときだけ）。"""
        self.count += 1
        entry: dict[str, Any] = self._where | {unit: number}
        if column is not None:
            entry["column"] = column
        entry |= {"error": reason, "input": text}
        self._file().write(orjson.dumps(entry) + b"\n")

    def _file(self) -> IO[bytes]:
        if self._out is None:
            try:
                self._out = self._stack.enter_context(open(self.path, "wb"))  # noqa: SIM115
            except OSError as exc:
                reason = exc.strerror or exc
                raise BatchError(f"cannot write error file {self.path}: {reason}") from None
        return self._out


@dataclass(frozen=True, slots=True)
class BatchResult:
    """バッチ推論の結果の集計。"""

    rows: int
    invalid: int
    seconds: float
    errors_path: str | None = None

    @property
    def rows_per_second(self) -> float:
        """推論した行の毎秒の数（不正な行を除く）。"""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """predict の指定（入出力・形式・チャンクの行数・列の対応・不正な行の扱い・表示）。"""

    input: str = STDIO
    output: str = STDIO
    input_format: InputFormat = InputFormat.AUTO
    output_format: OutputFormat = OutputFormat.AUTO
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    columns: ColumnMatch = ColumnMatch.AUTO
    keep_input: bool = False
    skip_invalid: bool = False
    errors: str | None = None
    progress: ProgressMode = ProgressMode.OFF
    progress_interval: float = DEFAULT_INTERVAL_SECONDS
    row_groups: tuple[int, ...] | None = None  # Parquet の一部だけ（Dask のパーティション）
    # エラーファイルの各行に足す場所（Dask：入力のファイル名）
    where: tuple[tuple[str, str], ...] = ()

    @property
    def reading(self) -> Reading:
        """入力の読み方。"""
        return Reading(
            self.input_format, self.chunk_rows, self.columns, self.keep_input, self.row_groups
        )

    @property
    def errors_path(self) -> str:
        """--skip-invalid のエラーファイル（既定は出力の隣、標準出力なら今のフォルダー）。"""
        if self.errors:
            return self.errors
        return f"{self.output}.errors.jsonl" if self.output != STDIO else "predict-errors.jsonl"


class _Sink:
    """推論した行を書き手へ、不正な行をエラーファイルへ（無ければ手前の行を書いてから止める）。"""

    def __init__(self, source: Source, writer: Writer, errors: ErrorLog | None) -> None:
        self._source = source
        self._writer = writer
        self._errors = errors
        self.rows = 0

    def take(self, chunk: Chunk) -> None:
        scored = self._source.score(chunk)
        if scored.problems and self._errors is None:
            first = scored.problems[0]
            self._write(scored.before(first.index))
            raise BatchError(self._where(chunk, first))
        for problem in scored.problems:
            assert self._errors is not None
            number = chunk.numbers[problem.index]
            text = self._source.text(chunk, problem.index)
            self._errors.record(self._source.unit, number, problem.column, problem.reason, text)
        self._write(scored)

    def _write(self, scored: Any) -> None:
        self._writer.write(scored)
        self.rows += len(scored)

    def _where(self, chunk: Chunk, problem: Problem) -> str:
        where = f"{self._source.unit} {chunk.numbers[problem.index]}"
        if problem.column is not None:
            where += f", column {problem.column}"
        return f"{where}: {problem.reason}"


def run_batch(model: BatchModel, options: BatchOptions) -> BatchResult:
    """入力を最後まで推論して出力に書く。ファイルへの出力は成功したときだけ現れる。"""
    if not 1 <= options.chunk_rows <= model.max_rows:
        raise BatchError(f"chunk size must be between 1 and {model.max_rows}: {options.chunk_rows}")
    started = time.perf_counter()
    output = OutputTarget(options.output)
    errors: ErrorLog | None = None
    try:
        with ExitStack() as stack:  # 入力・書き手・エラーファイルを成功でも失敗でも閉じる
            source = open_source(options.input, model, options.reading, stack)
            schema = source.schema if options.keep_input else None
            writer = output.writer(options.output_format, model, schema)
            stack.callback(writer.close)
            if options.skip_invalid:
                errors = ErrorLog(options.errors_path, stack, dict(options.where))
            sink = _Sink(source, writer, errors)
            read = 0
            progress = open_progress(
                options.progress,
                source.total,
                source.progress_unit,
                interval=options.progress_interval,
            )
            stack.callback(progress.close)
            for chunk in source.chunks:
                sink.take(chunk)
                read += len(chunk.numbers)
                progress.update(source.position(), sink.rows)
            if read == 0 and options.row_groups is None:
                raise BatchError(f"no rows in input {options.input}")
        output.commit()
    finally:
        output.discard()
    return BatchResult(
        rows=sink.rows,
        invalid=errors.count if errors is not None else 0,
        seconds=time.perf_counter() - started,
        errors_path=errors.path if errors is not None and errors.count else None,
    )
