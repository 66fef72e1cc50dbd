"""Dask でのバッチ推論（`dask` extra：dask[dataframe] と distributed）。

- CLI：`model-in-image predict INPUT -o OUTDIR --engine dask [--scheduler ADDR | --workers N]`。
  パーティション（partitions）ごとのタスクが単一プロセスの predict と同じ run_batch で
  OUTDIR/part-NNNNN.parquet を書く。--scheduler が無ければ 127.0.0.1 にワーカー N プロセスの
  LocalCluster を起こす。
- ノートブック：`score(ddf, model=...)` は Dask DataFrame を返す（各パーティションを
  frames.FrameScorer で推論。モデルはワーカーのプロセスごとに一度だけ読む）。
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Unpack

import orjson

from model_in_image.batch.base import BatchError, require_pyarrow
from model_in_image.batch.frames import (
    FrameScorer,
    ScorerOptions,
    absolute,
    empty_frame,
    frame_scorer,
)
from model_in_image.batch.partitions import (
    ERRORS_DIR,
    PartResult,
    list_partitions,
    publish,
    score_partition,
    staging_directory,
)
from model_in_image.batch.progress import ProgressMode
from model_in_image.batch.scoring import BatchOptions
from model_in_image.settings import Settings

try:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster, as_completed, progress
except ImportError as exc:  # pragma: no cover - extra が無い環境
    raise BatchError(
        "the dask engine needs the dask extra: pip install 'model-in-image[dask]'"
    ) from exc

logger = logging.getLogger(__name__)
# ワーカーの数の既定（--workers を省いたとき）：CPU の数
DEFAULT_WORKERS = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class EngineResult:
    """Dask での推論の集計（部品の数を含む）。"""

    rows: int
    invalid: int
    seconds: float
    parts: int
    errors_path: str | None = None

    @property
    def rows_per_second(self) -> float:
        """推論した行の毎秒の数（クラスターの起動を含む壁時計で）。"""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def connect(scheduler: str | None, workers: int) -> Iterator[Any]:
    """スケジューラーにつなぐ（無ければ 127.0.0.1 にワーカー workers 個のクラスターを起こす）。

    ワーカーは 1 プロセス 1 スレッド（ONNX Runtime も 1 スレッド）。
    """
    # スケジューラー・ナニーの INFO（起動・停止の数十行）は出さない：集計と誤りだけを見せる
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    if scheduler is not None:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # ダッシュボードは無しでも HTTP（/health など）は開く：8787 を取り合わない空きポートに
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_engine(
    settings: Settings,
    options: BatchOptions,
    *,
    scheduler: str | None = None,
    workers: int = DEFAULT_WORKERS,
) -> EngineResult:
    """入力のパーティションを Dask で推論し、出力のフォルダーに部品を書く（成功したときだけ）。

    不正な行は、既定では最初に失敗したパーティションの場所と理由で止め（残りは取り消す）、
    --skip-invalid なら OUTDIR/errors/part-NNNNN.jsonl に書く。
    """
    started = perf_counter()
    settings = absolute(settings)
    partitions = list_partitions(os.path.abspath(options.input), options.input_format)
    staging = staging_directory(options.output)
    try:
        with connect(scheduler, workers) as client:
            token = uuid.uuid4().hex[:8]
            futures = [
                client.submit(
                    score_partition,
                    settings,
                    options,
                    partition,
                    str(staging.resolve()),
                    key=f"model-in-image-predict-{token}-{partition.number}",
                )
                for partition in partitions
            ]
            if options.progress is not ProgressMode.OFF:
                with contextlib.redirect_stdout(sys.stderr):  # 標準出力は結果だけ
                    progress(futures)
            results = _gather(client, futures)
        publish(staging, options.output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    errors = os.path.join(options.output, ERRORS_DIR)
    return EngineResult(
        rows=sum(r.rows for r in results),
        invalid=sum(r.invalid for r in results),
        seconds=perf_counter() - started,
        parts=len(results),
        errors_path=errors if os.path.isdir(errors) else None,
    )


def _gather(client: Any, futures: Sequence[Any]) -> list[PartResult]:
    """終わった順に結果を集める。失敗したタスクがあれば残りを取り消し、その誤りで止める。"""
    results: list[PartResult] = []
    for future in as_completed(futures):
        if future.status == "error":
            exc = future.exception()  # 取り消す前に受け取る（取り消すと消える）
            client.cancel(list(futures))
            raise BatchError(f"a partition failed on the cluster: {exc!r}")
        result: PartResult = future.result()
        if result.error is not None:
            client.cancel(list(futures))
            raise BatchError(result.error)
        results.append(result)
    return sorted(results, key=lambda r: r.number)


@dataclass(frozen=True)
class _PartitionScorer:
    """Dask の map_partitions に渡す関数：FrameScorer と、不正な行を書くフォルダー（任意）。"""

    scorer: FrameScorer
    errors: str | None = None

    def __call__(self, frame: Any, partition_info: dict[str, Any] | None = None) -> Any:
        _, pa = require_pyarrow()
        number = 0 if partition_info is None else int(partition_info["number"])
        table = pa.Table.from_pandas(frame, preserve_index=False)
        scored = self.scorer.score(table, source=f"partition {number}")
        if self.errors is not None and scored.errors:
            # 名前はパーティションで決まる：やり直されても 1 つだけ
            path = Path(self.errors) / f"part-{number:05d}.jsonl"
            path.write_bytes(b"".join(orjson.dumps(entry) + b"\n" for entry in scored.errors))
        return scored.table.to_pandas()


def score(
    ddf: Any,
    model: str | os.PathLike[str] | None = None,
    *,
    errors: str | os.PathLike[str] | None = None,
    **options: Unpack[ScorerOptions],
) -> Any:
    """Dask DataFrame を推論し、推論の列（と keep_columns の列）の Dask DataFrame を返す（遅延）。

    options は frame_scorer と同じ（labels・card・settings・keep_columns・ignore_columns・
    columns・skip_invalid・chunk_rows）。列は CLI と同じく名前でモデルの入力に対応させる。
    不正な行は、既定では compute のときに「partition N row M, column ...: 理由」の BatchError、
    skip_invalid なら除く（errors のフォルダーを渡せば、パーティションごとの JSON Lines に
    場所と理由を書く）。
    """
    _, pa = require_pyarrow()
    scorer = frame_scorer(model, **options)
    folder = None
    if errors is not None:
        Path(errors).mkdir(parents=True, exist_ok=True)
        folder = str(Path(errors).resolve())
    meta = empty_frame(scorer, pa.Schema.from_pandas(ddf._meta, preserve_index=False))
    frame: dd.DataFrame = ddf.map_partitions(_PartitionScorer(scorer, folder), meta=meta)
    return frame
