"""入力をパーティションに分け、1 パーティションを 1 つの Parquet の部品に推論する。

エンジンを知らない（Dask のタスクが score_partition を呼ぶ）。

パーティションは Parquet の行グループ 1 つ、または CSV のファイル 1 つ。どちらも単一プロセスの
predict と同じ run_batch で推論する（行番号・列・誤りの文面も同じ）。部品の名前はパーティションの
番号で決まり、一時ファイルから置き換えるので、同じパーティションを 2 度推論しても（ワーカーが
落ちてやり直しても）部品は 1 つだけ。
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from model_in_image.batch.base import BatchError, require_pyarrow
from model_in_image.batch.frames import cached_dataplane
from model_in_image.batch.progress import ProgressMode
from model_in_image.batch.readers import InputFormat, input_format
from model_in_image.batch.scoring import BatchOptions, run_batch
from model_in_image.batch.writers import OutputFormat
from model_in_image.settings import Settings

TABLE_FORMATS = (InputFormat.CSV, InputFormat.PARQUET)
ERRORS_DIR = "errors"


@dataclass(frozen=True, slots=True)
class Partition:
    """入力の一区切り：ファイルと（Parquet なら）行グループ。"""

    number: int
    path: str
    format: InputFormat
    row_groups: tuple[int, ...] | None = None

    @property
    def part(self) -> str:
        """出力の部品の名前。"""
        return f"part-{self.number:05d}.parquet"


@dataclass(frozen=True, slots=True)
class PartResult:
    """1 パーティションの結果：推論した行・不正な行の数と秒、止まったならその理由。"""

    number: int
    rows: int
    invalid: int
    seconds: float
    error: str | None = None


def input_files(pattern: str) -> list[str]:
    """入力（ファイル・フォルダー・glob）のファイル（名前の順。フォルダーは CSV・Parquet だけ）。"""
    if os.path.isdir(pattern):
        names = sorted(str(p) for p in Path(pattern).iterdir() if p.is_file())
        files = [n for n in names if input_format(n, InputFormat.AUTO) in TABLE_FORMATS]
    elif glob.has_magic(pattern):
        files = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    else:
        files = [pattern] if os.path.isfile(pattern) else []
    if not files:
        raise BatchError(f"no CSV or Parquet input files in {pattern}")
    return files


def list_partitions(pattern: str, fmt: InputFormat = InputFormat.AUTO) -> list[Partition]:
    """入力をパーティションにする（Parquet は行グループごと、CSV はファイルごと）。"""
    partitions: list[Partition] = []
    for path in input_files(pattern):
        kind = input_format(path, fmt)
        if kind is InputFormat.PARQUET:
            pq, pa = require_pyarrow()
            try:
                groups = pq.ParquetFile(path).num_row_groups
            except (OSError, pa.ArrowException) as exc:
                raise BatchError(f"cannot read Parquet input {path}: {exc}") from None
            partitions += [Partition(len(partitions) + i, path, kind, (i,)) for i in range(groups)]
        elif kind is InputFormat.CSV:
            partitions.append(Partition(len(partitions), path, kind))
        else:
            raise BatchError(f"the dask engine reads CSV and Parquet files only: {path}")
    return partitions


def score_partition(
    settings: Settings, options: BatchOptions, partition: Partition, directory: str
) -> PartResult:
    """1 パーティションを推論して directory に部品を書く（ワーカーで動く。モデルは 1 度読む）。"""
    dataplane = cached_dataplane(settings, options.chunk_rows)
    errors = None
    if options.skip_invalid:
        errors = os.path.join(directory, ERRORS_DIR, f"part-{partition.number:05d}.jsonl")
    part = replace(
        options,
        input=partition.path,
        input_format=partition.format,
        output=os.path.join(directory, partition.part),
        output_format=OutputFormat.PARQUET,
        errors=errors,
        row_groups=partition.row_groups,
        progress=ProgressMode.OFF,
    )
    try:
        result = run_batch(dataplane, part)
    except BatchError as exc:  # 不正な行で止まる：値として返す（ワーカーの誤りのログにしない）
        return PartResult(partition.number, 0, 0, 0.0, exc.message)
    return PartResult(partition.number, result.rows, result.invalid, result.seconds)


def staging_directory(output: str) -> Path:
    """部品を書く一時フォルダー（出力の隣。出力先は無いか空であること）。"""
    target = Path(output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BatchError(f"output {output} must be a new or empty folder for the dask engine")
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / ERRORS_DIR).mkdir(parents=True)
    except OSError as exc:
        raise BatchError(f"cannot write output {output}: {exc.strerror or exc}") from None
    return staging


def publish(staging: Path, output: str) -> None:
    """一時フォルダーを出力にする（途中で落ちた書きかけの一時ファイル・空のエラーファイルを除く）。"""
    for leftover in staging.rglob(".*.part"):
        leftover.unlink()
    errors = staging / ERRORS_DIR
    for path in errors.iterdir():
        if path.stat().st_size == 0:
            path.unlink()
    if not any(errors.iterdir()):
        errors.rmdir()
    target = Path(output)
    if target.exists():
        target.rmdir()  # staging_directory が空であることを確かめた
    staging.rename(target)
