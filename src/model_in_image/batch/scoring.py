"""チャンクを検証・推論して書く（HTTP と同じ DataPlane の検証と推論、上限はチャンクの行数）。

見出し（CSV の見出し行・Parquet の列名）とモデルの入力の対応は columns が決め、
行の解釈は formats、推論の列は outputs、書き出しは writers が受け持つ。
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any, Protocol

import numpy as np
import orjson

from model_in_image.batch.base import STDIO, BatchError, require_pyarrow
from model_in_image.batch.columns import ColumnMatch, ColumnPlan, model_slots, plan_columns
from model_in_image.batch.decode import Decoded, Decoder, Problem
from model_in_image.batch.formats import (
    ArrowFormat,
    CsvFormat,
    JsonLinesFormat,
    RowFormat,
    SeedJsonFormat,
)
from model_in_image.batch.outputs import Outputs
from model_in_image.batch.progress import LINE_INTERVAL_SECONDS, ProgressMode, open_progress
from model_in_image.batch.readers import Chunk, InputFormat, Source, open_source
from model_in_image.batch.writers import OutputFormat, OutputTarget, Writer
from model_in_image.dataplane import DataPlane
from model_in_image.loading import load_dataplane
from model_in_image.settings import Settings

DEFAULT_CHUNK_ROWS = 10_000
MAX_CHUNK_ROWS = 1_000_000


class ErrorSink(Protocol):
    """不正な行の記録先（--skip-invalid のエラーファイル、またはメモリの中の一覧）。"""

    @property
    def count(self) -> int:
        """記録した行の数。"""

    def record(self, where: Where, problem: Problem, text: str) -> None:
        """1 行を記録する。"""


class ErrorList:
    """メモリの中の不正な行の一覧（error_entry の辞書。表を推論する関数が返す）。"""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    @property
    def count(self) -> int:
        """記録した行の数。"""
        return len(self.entries)

    def record(self, where: Where, problem: Problem, text: str) -> None:
        """1 行を記録する。"""
        self.entries.append(error_entry(where, problem, text))


class ErrorLog:
    """--skip-invalid の不正な行の記録（JSON Lines：ファイル・場所・列・理由・元の行）。"""

    def __init__(self, out: IO[bytes], path: str) -> None:
        self._out = out
        self.path = path
        self.count = 0

    def record(self, where: Where, problem: Problem, text: str) -> None:
        """1 行を記録する（列の番号・名前は分かるときだけ）。"""
        self.count += 1
        self._out.write(orjson.dumps(error_entry(where, problem, text)) + b"\n")


@dataclass(frozen=True, slots=True)
class Where:
    """誤りの場所：入力の名前（ファイル、標準入力は stdin）と行の呼び方（line・row）と行番号。"""

    source: str
    unit: str
    number: int

    def text(self, problem: Problem) -> str:
        """「rows.csv line 3, column 2 'x': 理由」の形の文面。"""
        return f"{self.source} {self.unit} {self.number}{problem.where()}: {problem.reason}"


def error_entry(where: Where, problem: Problem, text: str) -> dict[str, Any]:
    """エラーファイル（エラーのデータセット）の 1 行。"""
    entry: dict[str, Any] = {"file": where.source, where.unit: where.number}
    if problem.column is not None:
        entry["column"] = problem.column
    if problem.name is not None:
        entry["name"] = problem.name
    return entry | {"error": problem.reason, "input": text}


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


class BatchScorer:
    """チャンクを検証・推論して書き手に渡す（不正な行は止めるか、記録して飛ばす）。"""

    def __init__(
        self,
        outputs: Outputs,
        fmt: RowFormat,
        writer: Writer,
        errors: ErrorSink | None,
        source: str,
    ) -> None:
        self._outputs = outputs
        self._format = fmt
        self._writer = writer
        self._errors = errors
        self._source = source
        self.rows = 0

    def score(self, chunk: Chunk) -> None:
        """1 チャンクを推論して書く。

        不正な行は --skip-invalid なら記録して飛ばし、でなければ手前の行まで書いて止める。
        """
        decoded = self._format.decode(chunk.items)
        problems = sorted(decoded.problems, key=lambda problem: problem.index)
        if problems and self._errors is None:
            first = problems[0]
            self._emit(decoded.before(first.index))
            raise BatchError(self._where(chunk, first).text(first))
        for problem in problems:
            text = self._format.text(chunk.items, problem.index)
            self._errors.record(self._where(chunk, problem), problem, text)  # type: ignore[union-attr]
        self._emit(decoded)

    def _where(self, chunk: Chunk, problem: Problem) -> Where:
        return Where(self._source, self._format.unit, chunk.numbers[problem.index])

    def _emit(self, decoded: Decoded) -> None:
        if decoded.feeds is None:
            return
        self._writer.write([*decoded.kept, *self._outputs.score(decoded.feeds)])
        self.rows += len(decoded.valid)


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """predict の指定（入出力・形式・チャンクの行数・不正な行の扱い・表示）。"""

    input: str = STDIO
    output: str = STDIO
    input_format: InputFormat = InputFormat.AUTO
    output_format: OutputFormat = OutputFormat.AUTO
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    skip_invalid: bool = False
    errors: str | None = None
    header: bool | None = None
    columns: ColumnMatch = ColumnMatch.NAME
    keep_columns: tuple[str, ...] = ()
    ignore_columns: tuple[str, ...] = ()
    row_groups: tuple[int, ...] | None = None  # Parquet の読む行グループ（Dask のパーティション）
    progress: ProgressMode = ProgressMode.OFF
    progress_interval: float = LINE_INTERVAL_SECONDS


def load_batch_dataplane(settings: Settings, chunk_rows: int) -> DataPlane:
    """バッチ推論用のデータプレーン（行数の上限は MAX_REQUEST_ROWS でなくチャンクの行数）。"""
    return load_dataplane(settings.model_copy(update={"max_request_rows": chunk_rows}))


def table_format(dataplane: DataPlane, source: Source, options: BatchOptions) -> Table:
    """入力の形式・見出しと指定から、行の解釈と出力の列（残す列・推論の列）を決める。"""
    outputs = Outputs(dataplane)
    predictions = list(zip(outputs.layout.names, outputs.layout.dtypes, strict=True))
    if source.format in (InputFormat.JSON, InputFormat.JSONL):
        if options.keep_columns:
            raise BatchError(
                "--keep-columns needs CSV or Parquet input (JSON rows have no columns)"
            )
        decoder = Decoder(dataplane, None)
        fmt: RowFormat = (
            SeedJsonFormat(decoder)
            if source.format is InputFormat.JSON
            else JsonLinesFormat(decoder)
        )
        return Table(fmt, outputs, predictions)
    plan = plan_columns(
        model_slots(dataplane),
        source.header,
        keep=options.keep_columns,
        ignore=options.ignore_columns,
        match=options.columns,
    )
    decoder = Decoder(dataplane, plan)
    if source.format is InputFormat.PARQUET:
        fmt = ArrowFormat(decoder, plan, numeric_columns(source.schema, plan))
        kept = [(name, source.schema.field(i).type) for name, i in plan.keep]
    else:
        fmt = CsvFormat(decoder, plan)
        kept = [(name, np.dtype(object)) for name, _ in plan.keep]
    return Table(fmt, outputs, [*kept, *predictions])


@dataclass(frozen=True, slots=True)
class Table:
    """行の解釈・推論の列・出力の列の名前と型。"""

    format: RowFormat
    outputs: Outputs
    columns: list[tuple[str, Any]]


def numeric_columns(schema: Any, plan: ColumnPlan) -> bool:
    """特徴量の列がすべて数値（整数・実数）の型か。"""
    _, pa = require_pyarrow()
    return all(
        pa.types.is_integer(kind) or pa.types.is_floating(kind)
        for kind in (schema.field(i).type for i in plan.sources)
    )


def run_batch(dataplane: DataPlane, options: BatchOptions) -> BatchResult:
    """入力を最後まで推論して出力に書く。ファイルへの出力は成功したときだけ現れる。"""
    if not 1 <= options.chunk_rows <= dataplane.limits.max_rows:
        raise BatchError(
            f"chunk size must be between 1 and {dataplane.limits.max_rows}: {options.chunk_rows}"
        )
    started = time.perf_counter()
    output = OutputTarget(options.output)
    try:
        with ExitStack() as stack:  # 入力・書き手・エラーファイルを成功でも失敗でも閉じる
            source = open_source(
                options.input,
                options.input_format,
                options.chunk_rows,
                stack,
                options.header,
                options.row_groups,
            )
            table = table_format(dataplane, source, options)
            writer = output.writer(options.output_format, table.columns)
            stack.callback(writer.close)
            errors = _error_log(options, stack) if options.skip_invalid else None
            name = "stdin" if options.input == STDIO else options.input
            scorer = BatchScorer(table.outputs, table.format, writer, errors, name)
            read = 0
            progress = open_progress(
                options.progress, source.total, source.unit, options.progress_interval
            )
            with progress:
                for chunk in source.chunks:
                    scorer.score(chunk)
                    read += len(chunk.numbers)
                    progress.advance(source.position(), scorer.rows)
            if read == 0:
                raise BatchError(f"no rows in input {options.input}")
        output.commit()
    finally:
        output.discard()
    return BatchResult(
        rows=scorer.rows,
        invalid=errors.count if errors is not None else 0,
        seconds=time.perf_counter() - started,
        errors_path=errors.path if errors is not None else None,
    )


def _error_log(options: BatchOptions, stack: ExitStack) -> ErrorLog:
    """--skip-invalid のエラーファイル（既定は出力の隣、標準出力なら今のフォルダー）。"""
    path = options.errors or (
        f"{options.output}.errors.jsonl" if options.output != STDIO else "predict-errors.jsonl"
    )
    try:
        handle = stack.enter_context(open(path, "wb"))  # noqa: SIM115 -- stack が閉じる
    except OSError as exc:
        raise BatchError(f"cannot write error file {path}: {exc.strerror or exc}") from None
    return ErrorLog(handle, path)
