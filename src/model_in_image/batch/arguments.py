"""predict のコマンドラインの一部：列とエンジンのオプション、--engine dask の実行と集計。"""

from __future__ import annotations

import argparse
import sys

from model_in_image.batch.base import STDIO, BatchError
from model_in_image.batch.columns import ColumnMatch
from model_in_image.batch.scoring import BatchOptions
from model_in_image.settings import Settings

# Ctrl-C で止めた：シェルの慣習どおり 128 + SIGINT
EXIT_INTERRUPTED = 130


def names(text: str) -> tuple[str, ...]:
    """カンマ区切りの列名（空の名前は除く）。"""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_column_options(predict: argparse.ArgumentParser) -> None:
    """predict の列の指定：見出し、名前か位置か、残す列・無視する列。"""
    group = predict.add_argument_group(
        "列（CSV・Parquet。見出しがあれば名前でモデルの入力に対応させる）"
    )
    group.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CSV の最初の行が見出しか（既定：どのセルも数値でなければ見出し）。"
        "--no-header のファイルは列の順にモデルの入力とする",
    )
    group.add_argument(
        "--columns",
        type=ColumnMatch,
        choices=list(ColumnMatch),
        default=ColumnMatch.NAME,
        help="見出しのある入力の列の対応（既定 name：モデルの特徴量名・入力名で。"
        "position：見出しの名前によらず列の順に）",
    )
    group.add_argument(
        "--keep-columns",
        type=names,
        default=(),
        metavar="NAME,...",
        help="結果に残す入力の列（例 id。推論の列の前に、入力の順で書く）",
    )
    group.add_argument(
        "--ignore-columns",
        type=names,
        default=(),
        metavar="NAME,...",
        help="使わない入力の列（見出しにモデルの知らない列があれば、既定では誤り）",
    )


def add_engine_options(predict: argparse.ArgumentParser) -> None:
    """predict のエンジン：このプロセス（既定）か Dask（`dask` extra）。"""
    group = predict.add_argument_group(
        "エンジン（--engine dask：INPUT は CSV・Parquet のファイル・フォルダー・glob、"
        "-o はパーティションごとの Parquet の部品を書くフォルダー）"
    )
    group.add_argument(
        "--engine",
        choices=["local", "dask"],
        default="local",
        help="local：このプロセスでチャンクごとに（既定）。"
        "dask：Dask のワーカーでパーティションごとに",
    )
    group.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="使う Dask のスケジューラー（省略時は 127.0.0.1 にワーカー --workers 個を起こす）",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="--scheduler が無いときに起こすワーカーのプロセス数（既定は CPU の数）",
    )


def predict_dask(settings: Settings, options: BatchOptions, args: argparse.Namespace) -> int:
    """--engine dask：パーティションごとの部品を OUTDIR に書き、集計を表示する。"""
    if STDIO in (options.output, options.input):
        raise BatchError("--engine dask needs an input path and an output folder (-o OUTDIR)")
    from model_in_image.batch.dask import DEFAULT_WORKERS, run_engine

    try:
        result = run_engine(
            settings, options, scheduler=args.scheduler, workers=args.workers or DEFAULT_WORKERS
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        line = (
            f"predict: {result.rows:,} rows, {result.invalid:,} invalid, "
            f"{result.seconds:.2f} s, {result.rows_per_second:,.0f} rows/s -> "
            f"{options.output} ({result.parts} parts, dask)"
        )
        if result.errors_path:
            line += f" (invalid rows: {result.errors_path})"
        print(line, file=sys.stderr)
    return 0
