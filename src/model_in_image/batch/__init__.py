"""バッチ推論（model-in-image predict）：どんな大きさの入力も一定のメモリでチャンクごとに推論する。

readers が入力を行番号つきのチャンクにし、scoring が HTTP と同じ DataPlane.validate / predict で
検証・推論し（行数の上限は HTTP の MAX_REQUEST_ROWS ではなくチャンクの行数）、writers が入力の順に
書く。チャンクが一括で読めない・検証できないときだけ 1 行ずつに戻り、不正な行の場所と理由を示す。
"""

from model_in_image.batch.base import STDIO, BatchError
from model_in_image.batch.columns import ColumnMatch
from model_in_image.batch.progress import ProgressMode, choose_mode
from model_in_image.batch.readers import InputFormat
from model_in_image.batch.scoring import (
    DEFAULT_CHUNK_ROWS,
    MAX_CHUNK_ROWS,
    BatchOptions,
    BatchResult,
    load_batch_dataplane,
    run_batch,
)
from model_in_image.batch.writers import OutputFormat

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "MAX_CHUNK_ROWS",
    "STDIO",
    "BatchError",
    "BatchOptions",
    "BatchResult",
    "ColumnMatch",
    "InputFormat",
    "OutputFormat",
    "ProgressMode",
    "choose_mode",
    "load_batch_dataplane",
    "run_batch",
]
