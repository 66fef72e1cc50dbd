"""Arrow の表（pyarrow の Table・RecordBatch、pandas の DataFrame）を推論する。エンジンを知らない。

CLI の Parquet、Dask のパーティション、Ray Data の map_batches、Spark の mapInArrow はすべて
ここを通る。FrameScorer は pickle でき、モデルはプロセスごとに一度だけ読む（cached_batch_model）。
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import orjson

from model_in_image.batch.base import BatchError, RowError, require_pyarrow
from model_in_image.batch.columns import ColumnMatch, match_columns
from model_in_image.batch.model import BatchModel, cached_batch_model
from model_in_image.batch.scored import Problem, Scored, predicted
from model_in_image.settings import Settings

PROBA_PREFIX = "proba_"
ERROR_COLUMN = "error"
DEFAULT_CHUNK_ROWS = 10_000


def prediction_names(labels: Sequence[str]) -> list[str]:
    """推論の列名：label と、クラスごとの proba_<ラベル名>。"""
    return ["label", *(PROBA_PREFIX + name for name in labels)]


@dataclass(frozen=True, slots=True)
class TableColumns:
    """表の列とモデルの特徴量の対応（特徴量の順の列番号、位置なら None）。"""

    order: list[int] | None
    names: list[str]

    def feature_indices(self) -> list[int]:
        """特徴量の順に並べた列番号（0 始まり）。"""
        return list(range(len(self.names))) if self.order is None else self.order


def table_columns(schema: Any, model: BatchModel, how: ColumnMatch) -> TableColumns:
    """見出し（列名）とモデルの特徴量名を対応させ、特徴量の列が数値であることを確かめる。"""
    _, pa = require_pyarrow()
    names = list(schema.names)
    columns = TableColumns(match_columns(names, model.feature_names, how), names)
    for index in columns.feature_indices():
        kind = schema.field(index).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
            raise BatchError(f"column {names[index]!r} is not numeric ({kind})")
    return columns


def score_table(
    model: BatchModel, table: Any, columns: TableColumns, *, keep_input: bool = False
) -> Scored:
    """表（行数はモデルの上限まで）を検証・推論する。不正な行は Problem にして飛ばす。"""
    indices = columns.feature_indices()
    arrays = [table.column(i).to_numpy(zero_copy_only=False) for i in indices]
    matrix = np.column_stack(arrays).astype(np.float64) if arrays else np.empty((len(table), 0))
    features = model.check(matrix)
    if features is not None:
        return _with_inputs(predicted(model, features), table, keep_input)
    problems: list[Problem] = []
    kept: list[int] = []
    for index, row in enumerate(matrix):
        try:
            model.check_row(row)
        except RowError as exc:
            column = None if exc.column is None else indices[exc.column - 1] + 1
            problems.append(Problem(index, column, exc.reason))
        else:
            kept.append(index)
    positions = np.array(kept, dtype=np.intp)
    valid = model.check(matrix[positions]) if kept else np.empty((0, matrix.shape[1]))
    assert valid is not None  # どの行も 1 行ずつの検証を通った
    scored = predicted(model, valid, problems, positions)
    return _with_inputs(scored, table.take(positions) if keep_input else None, keep_input)


def _with_inputs(scored: Scored, table: Any, keep_input: bool) -> Scored:
    if not keep_input:
        return scored
    return Scored(scored.labels, scored.probabilities, scored.problems, scored.kept, table)


def row_text(table: Any, columns: TableColumns, index: int) -> str:
    """エラーファイルに残す、不正な行の特徴量の列（JSON のオブジェクト）。"""
    row = {columns.names[i]: table.column(i)[index].as_py() for i in columns.feature_indices()}
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def prediction_table(scored: Scored, model: BatchModel) -> Any:
    """推論の列（入力の列を残すならその後ろ）の pyarrow の Table。"""
    _, pa = require_pyarrow()
    names = prediction_names(model.labels)
    arrays = [pa.array(scored.labels, pa.string()), *scored.probabilities.T]
    table = pa.table(arrays, names=names)
    return table if scored.inputs is None else _appended(scored.inputs, table)


def _appended(inputs: Any, predictions: Any) -> Any:
    """入力の列の後ろに推論の列を足す（入力の列と重なる名前は出力できない）。"""
    for name, column in zip(predictions.column_names, predictions.columns, strict=True):
        if name in inputs.column_names:
            raise BatchError(f"input column {name!r} clashes with a prediction column")
        inputs = inputs.append_column(name, column)
    return inputs


def output_schema(model: BatchModel, input_schema: Any = None, *, marked: bool = False) -> Any:
    """出力の列の型：入力の列（残すなら）、label、proba_<ラベル名>、印をつけるなら error。"""
    _, pa = require_pyarrow()
    value = pa.from_numpy_dtype(model.probability_dtype)
    names = prediction_names(model.labels)
    fields = [pa.field(names[0], pa.string()), *(pa.field(name, value) for name in names[1:])]
    if marked:
        fields.append(pa.field(ERROR_COLUMN, pa.string()))
    if input_schema is None:
        return pa.schema(fields)
    return pa.schema([*input_schema, *fields])


class Invalid(StrEnum):
    """不正な行の扱い（raise：行の番号と理由で止める、mark：label を空にして error に理由）。"""

    RAISE = "raise"
    MARK = "mark"


@dataclass(frozen=True, slots=True)
class FrameScorer:
    """表・DataFrame を推論する関数（pickle でき、どのエンジンにも渡せる）。

    pandas の DataFrame は DataFrame（同じ index）、pyarrow の Table・RecordBatch は同じ型で返す。
    Ray Data の map_batches にはこのクラスを渡せば、アクターごとに一度だけモデルを読む。
    """

    settings: Settings
    columns: ColumnMatch = ColumnMatch.AUTO
    keep_input: bool = False
    invalid: Invalid = Invalid.RAISE
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    @property
    def model(self) -> BatchModel:
        """このプロセスのモデル（初めて使うときに読む）。"""
        return cached_batch_model(self.settings, self.chunk_rows)

    def schema(self, input_schema: Any) -> Any:
        """input_schema の表を渡したときの出力の列の型。"""
        kept = input_schema if self.keep_input else None
        return output_schema(self.model, kept, marked=self.invalid is Invalid.MARK)

    def __call__(self, batch: Any) -> Any:
        """表 1 つを推論する（入力と同じ種類で返す）。"""
        _, pa = require_pyarrow()
        if isinstance(batch, pa.RecordBatch):
            return self.table(pa.Table.from_batches([batch])).combine_chunks().to_batches()[0]
        if isinstance(batch, pa.Table):
            return self.table(batch)
        table = pa.Table.from_pandas(batch, preserve_index=False)
        frame = self.table(table).to_pandas()
        frame.index = batch.index
        return frame

    def batches(self, batches: Iterable[Any]) -> Iterator[Any]:
        """RecordBatch の列を推論する（Spark の mapInArrow に渡す形）。"""
        for batch in batches:
            yield self(batch)

    def table(self, table: Any) -> Any:
        """pyarrow の Table を推論し、出力の列の Table を返す（チャンクの行数ずつ）。"""
        _, pa = require_pyarrow()
        model = self.model
        columns = table_columns(table.schema, model, self.columns)
        parts = []
        for start in range(0, len(table), self.chunk_rows):
            part = table.slice(start, self.chunk_rows)
            scored = score_table(model, part, columns, keep_input=self.keep_input)
            if self.invalid is Invalid.RAISE:
                _raise_first(scored, columns, start)
                parts.append(prediction_table(scored, model))
            else:
                parts.append(self._marked(model, part, scored, columns))
        schema = self.schema(table.schema)
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def _marked(self, model: BatchModel, part: Any, scored: Scored, columns: TableColumns) -> Any:
        """すべての行を残し、不正な行は label と確率を空にして error に理由を書く。"""
        _, pa = require_pyarrow()
        if not scored.problems:
            table = prediction_table(scored, model)
            return table.append_column(ERROR_COLUMN, pa.nulls(len(part), pa.string()))
        rows = len(part)
        valid = np.zeros(rows, dtype=bool)
        assert scored.kept is not None
        valid[scored.kept] = True
        labels: list[str | None] = [None] * rows
        for index, label in zip(scored.kept.tolist(), scored.labels, strict=True):
            labels[index] = label
        probabilities = np.zeros((rows, len(model.labels)), dtype=model.probability_dtype)
        probabilities[scored.kept] = scored.probabilities
        errors: list[str | None] = [None] * rows
        for problem in scored.problems:
            where = (
                "" if problem.column is None else f"column {columns.names[problem.column - 1]!r}: "
            )
            errors[problem.index] = where + problem.reason
        arrays = [
            pa.array(labels, pa.string()),
            *(pa.array(values, mask=~valid) for values in probabilities.T),
            pa.array(errors, pa.string()),
        ]
        names = [*prediction_names(model.labels), ERROR_COLUMN]
        table = pa.table(arrays, names=names)
        return _appended(part, table) if self.keep_input else table


def _raise_first(scored: Scored, columns: TableColumns, start: int) -> None:
    """不正な行があれば、表の中の行番号（1 始まり）と列名・理由で止める。"""
    if not scored.problems:
        return
    problem = scored.problems[0]
    separator = ": " if problem.column is None else ", "
    raise BatchError(f"row {start + problem.index + 1}{separator}{_described(problem, columns)}")


def _described(problem: Problem, columns: TableColumns) -> str:
    """不正な行の理由（列が分かれば列名を前に）。"""
    if problem.column is None:
        return problem.reason
    return f"column {columns.names[problem.column - 1]!r}: {problem.reason}"
