"""Arrow の表（Table・RecordBatch）と pandas の DataFrame を推論する。エンジンを知らない。

CLI の Parquet と同じ ArrowFormat → Decoder（DataPlane.validate）→ Outputs → BatchScorer を通る
（別の実装を持たない）。FrameScorer は pickle でき、Dask の map_partitions・Ray Data の
map_batches・Spark の mapInArrow にそのまま渡せる。モデルはプロセスごとに一度だけ読む
（cached_dataplane：モデルのパスと設定ごと）。パーティションごとには読まない。
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from model_in_image.batch.base import require_pyarrow
from model_in_image.batch.columns import ColumnMatch
from model_in_image.batch.readers import Chunk, InputFormat, Source
from model_in_image.batch.scoring import (
    DEFAULT_CHUNK_ROWS,
    BatchOptions,
    BatchScorer,
    ErrorList,
    Table,
    load_batch_dataplane,
    table_format,
)
from model_in_image.batch.writers import TableWriter
from model_in_image.dataplane import DataPlane
from model_in_image.settings import Settings

_CACHE: dict[tuple[Any, ...], DataPlane] = {}
_CACHE_LOCK = threading.Lock()


def cache_key(settings: Settings, chunk_rows: int) -> tuple[Any, ...]:
    """モデルを同じに読む設定の組（モデルのパス・sha256・ラベル・カード・後処理・種類・行数）。"""
    return (
        str(settings.model_filepath),
        settings.model_sha256,
        str(settings.label_filepath),
        str(settings.model_card_filepath),
        settings.model_postprocess.value,
        settings.model_kind,
        chunk_rows,
    )


def cached_dataplane(settings: Settings, chunk_rows: int) -> DataPlane:
    """このプロセスのデータプレーン（初めて使うときに一度だけ読む。スレッドから呼んでもよい）。"""
    key = cache_key(settings, chunk_rows)
    with _CACHE_LOCK:  # Dask のワーカーは複数のスレッドからも呼ぶ：同時に 2 回読まない
        dataplane = _CACHE.get(key)
        if dataplane is None:
            dataplane = _CACHE[key] = load_batch_dataplane(settings, chunk_rows)
    return dataplane


@dataclass(frozen=True, slots=True)
class Scored:
    """表 1 つの推論の結果：出力の Table（残した列と推論の列）と、不正な行（skip のとき）。"""

    table: Any
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FrameScorer:
    """表・DataFrame を推論する関数（pickle できる。設定とモデルのパスだけを運ぶ）。

    不正な行は、既定では場所（source の行番号）と理由の BatchError で止め、skip_invalid なら
    除いて Scored.errors に残す。pandas の DataFrame は DataFrame（index は 0 からの連番）で、
    pyarrow の Table・RecordBatch は Table で返す。
    """

    settings: Settings
    keep_columns: tuple[str, ...] = ()
    ignore_columns: tuple[str, ...] = ()
    columns: ColumnMatch = ColumnMatch.NAME
    skip_invalid: bool = False
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    @property
    def dataplane(self) -> DataPlane:
        """このプロセスのモデル（初めて使うときに読む）。"""
        return cached_dataplane(self.settings, self.chunk_rows)

    def _options(self) -> BatchOptions:
        return BatchOptions(
            chunk_rows=self.chunk_rows,
            skip_invalid=self.skip_invalid,
            columns=self.columns,
            keep_columns=self.keep_columns,
            ignore_columns=self.ignore_columns,
        )

    def layout(self, schema: Any) -> Table:
        """schema の表を渡したときの行の解釈と出力の列（pyarrow の Schema から）。"""
        names = list(schema.names)
        source = Source(iter(()), InputFormat.PARQUET, names, None, "rows", lambda: 0, schema)
        return table_format(self.dataplane, source, self._options())

    def output_schema(self, schema: Any) -> Any:
        """schema の表を渡したときの出力の列の型（pyarrow の Schema）。"""
        return TableWriter(self.layout(schema).columns).schema

    def score(self, table: Any, *, source: str = "table", first_row: int = 1) -> Scored:
        """pyarrow の Table を推論する（行番号は first_row から数える）。"""
        layout = self.layout(table.schema)
        writer = TableWriter(layout.columns)
        errors = ErrorList() if self.skip_invalid else None
        scorer = BatchScorer(layout.outputs, layout.format, writer, errors, source)
        start = first_row
        for batch in table.to_batches(max_chunksize=self.chunk_rows):
            scorer.score(Chunk(list(range(start, start + batch.num_rows)), batch))
            start += batch.num_rows
        return Scored(writer.table(), errors.entries if errors is not None else [])

    def __call__(self, frame: Any, partition_info: dict[str, Any] | None = None) -> Any:
        """表 1 つを推論する（pandas なら DataFrame、Arrow なら Table で返す）。

        partition_info は Dask の map_partitions が渡すパーティションの番号（誤りの場所に使う）。
        """
        _, pa = require_pyarrow()
        source = "table" if partition_info is None else f"partition {partition_info['number']}"
        if isinstance(frame, pa.RecordBatch):
            return self.score(pa.Table.from_batches([frame]), source=source).table
        if isinstance(frame, pa.Table):
            return self.score(frame, source=source).table
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return self.score(table, source=source).table.to_pandas()

    def batches(self, batches: Iterable[Any]) -> Iterator[Any]:
        """RecordBatch の列を推論する（Spark の mapInArrow に渡す形）。"""
        for batch in batches:
            yield from self(batch).to_batches()


def absolute(settings: Settings) -> Settings:
    """ワーカーの作業フォルダーによらないよう、モデル・ラベル・カードのパスを絶対パスにする。"""
    paths = ("model_filepath", "label_filepath", "model_card_filepath")
    update = {
        name: Path(value).resolve()
        for name in paths
        if (value := getattr(settings, name)) is not None
    }
    return settings.model_copy(update=update)


class ScorerOptions(TypedDict, total=False):
    """frame_scorer（と Dask の score）のキーワード引数。"""

    labels: str | os.PathLike[str] | None
    card: str | os.PathLike[str] | None
    settings: Settings | None
    keep_columns: Sequence[str]
    ignore_columns: Sequence[str]
    columns: ColumnMatch
    skip_invalid: bool
    chunk_rows: int


def frame_scorer(
    model: str | os.PathLike[str] | None = None, **options: Unpack[ScorerOptions]
) -> FrameScorer:
    """エンジンに渡す FrameScorer（設定に model・labels・card を重ね、パスは絶対パスに）。

    設定は settings（無ければ環境変数）。Dask の score・Ray Data の map_batches・
    Spark の mapInArrow が同じものを使う。
    """
    base = options.get("settings") or Settings()
    paths = {
        "model_filepath": model,
        "label_filepath": options.get("labels"),
        "model_card_filepath": options.get("card"),
    }
    base = base.model_copy(update={k: Path(v) for k, v in paths.items() if v is not None})
    return FrameScorer(
        absolute(base),
        keep_columns=tuple(options.get("keep_columns", ())),
        ignore_columns=tuple(options.get("ignore_columns", ())),
        columns=options.get("columns", ColumnMatch.NAME),
        skip_invalid=options.get("skip_invalid", False),
        chunk_rows=options.get("chunk_rows", DEFAULT_CHUNK_ROWS),
    )


def empty_frame(scorer: FrameScorer, schema: Any) -> Any:
    """出力と同じ列と型の空の pandas の DataFrame（Dask の meta）。"""
    return scorer.output_schema(schema).empty_table().to_pandas()
