"""チャンクを検証・推論して書く（HTTP と同じ DataPlane の検証と推論、上限はチャンクの行数）。"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any, cast

import numpy as np
import orjson

from model_in_image.batch.base import STDIO, BatchError, RowError
from model_in_image.batch.formats import RowFormat
from model_in_image.batch.progress import LINE_INTERVAL_SECONDS, ProgressMode, open_progress
from model_in_image.batch.readers import Chunk, InputFormat, open_source
from model_in_image.batch.writers import OutputFormat, OutputTarget, Writer
from model_in_image.dataplane import DataPlane, rows_of
from model_in_image.errors import InvalidInputError
from model_in_image.loading import load_dataplane
from model_in_image.model.onnx_model import Feeds
from model_in_image.settings import Settings

Rows = Sequence[Sequence[float]]
DEFAULT_CHUNK_ROWS = 10_000
MAX_CHUNK_ROWS = 1_000_000


class ErrorLog:
    """--skip-invalid の不正な行の記録（JSON Lines：場所・理由・元の行）。"""

    def __init__(self, out: IO[bytes], path: str) -> None:
        self._out = out
        self.path = path
        self.count = 0

    def record(self, unit: str, number: int, column: int | None, reason: str, text: str) -> None:
        """1 行を記録する（column は分かるときだけ）。"""
        self.count += 1
        entry: dict[str, Any] = {unit: number}
        if column is not None:
            entry["column"] = column
        entry |= {"error": reason, "input": text}
        self._out.write(orjson.dumps(entry) + b"\n")


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

    def __init__(self, dataplane: DataPlane, writer: Writer, errors: ErrorLog | None) -> None:
        self._dataplane = dataplane
        self._writer = writer
        self._errors = errors
        self.rows = 0

    def score(self, chunk: Chunk, fmt: RowFormat) -> None:
        """1 チャンクを推論して書く（一括で不正があれば 1 行ずつ調べる）。"""
        array = fmt.parse_all(chunk.items)
        features: Feeds | None = None
        if array is not None:
            try:
                # validate_rows は numpy の配列をそのまま受け付ける（型の注釈は行のリスト）
                features = self._dataplane.validate(cast("Rows", array), loc=())
            except InvalidInputError:
                features = None
        if features is None:
            features = self._row_by_row(chunk, fmt)
        self._emit(features)

    def _emit(self, features: Feeds) -> None:
        rows = rows_of(features)
        if rows == 0:
            return
        probabilities, labels = self._dataplane.predict_labels(features)
        self._writer.write(labels, probabilities)
        self.rows += rows

    def _row_by_row(self, chunk: Chunk, fmt: RowFormat) -> Feeds:
        valid: list[Sequence[float]] = []
        for number, item in zip(chunk.numbers, chunk.items, strict=True):
            try:
                row = fmt.parse_one(item)
                if isinstance(row, np.ndarray):  # Parquet の行は配列：検証は値のリストで行う
                    row = row.tolist()
                self._dataplane.validate([row], loc=())
            except RowError as exc:
                self._reject(fmt, number, item, exc.column, exc.reason, valid)
            except InvalidInputError as exc:
                self._reject(fmt, number, item, *_validation_reason(exc), valid)
            else:
                valid.append(row)
        if not valid:
            spec = self._dataplane.model.signature.inputs[0]
            return {spec.name: np.empty((0, self._dataplane.input_width or 0), spec.dtype)}
        return self._dataplane.validate(valid, loc=())

    def _reject(
        self,
        fmt: RowFormat,
        number: int,
        item: Any,
        column: int | None,
        reason: str,
        valid: list[Sequence[float]],
    ) -> None:
        """不正な行：--skip-invalid なら記録して続け、そうでなければ手前の行を書いてから止める。"""
        if self._errors is not None:
            self._errors.record(fmt.unit, number, column, reason, fmt.text(item))
            return
        if valid:
            self._emit(self._dataplane.validate(valid, loc=()))
        where = f"{fmt.unit} {number}" + (f", column {column}" if column is not None else "")
        raise BatchError(f"{where}: {reason}")


ROW_INDEX = re.compile(r"^row \d+ ")


def _validation_reason(exc: InvalidInputError) -> tuple[int | None, str]:
    """1 行だけを検証したときのエラーから（列番号 1 始まり, 理由）を取り出す。"""
    error = exc.errors[0]
    loc = error["loc"]
    column = loc[1] + 1 if len(loc) == 2 else None
    return column, ROW_INDEX.sub("row ", error["msg"])


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
    progress: ProgressMode = ProgressMode.OFF
    progress_interval: float = LINE_INTERVAL_SECONDS


def load_batch_dataplane(settings: Settings, chunk_rows: int) -> DataPlane:
    """バッチ推論用のデータプレーン（行数の上限は HTTP の MAX_BATCH_ROWS でなくチャンクの行数）。

    いまのバッチ推論は、クラスの確率を出し実数 1 入力 [N, 幅] のモデルだけを扱う。
    """
    dataplane = load_dataplane(settings.model_copy(update={"max_batch_rows": chunk_rows}))
    # proba_<名前> の列に書くのは確率だけ（ロジットのネットは MODEL_POSTPROCESS で確率にする）
    probabilities = dataplane.classes is not None and dataplane.model.gives_probabilities
    if dataplane.input_width is None or not probabilities:
        raise BatchError(
            "batch scoring needs a model with class probabilities and one float input "
            "[N, width]; "
            f"this model is a {dataplane.kind.value} ({dataplane.model.describe()}): "
            "serve it over the REST or gRPC API instead"
        )
    return dataplane


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
            source = open_source(options.input, options.input_format, options.chunk_rows, stack)
            writer = output.writer(options.output_format, dataplane)
            stack.callback(writer.close)
            errors = _error_log(options, stack) if options.skip_invalid else None
            scorer = BatchScorer(dataplane, writer, errors)
            read = 0
            progress = open_progress(
                options.progress, source.total, source.unit, options.progress_interval
            )
            with progress:
                for chunk in source.chunks:
                    scorer.score(chunk, source.format)
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
