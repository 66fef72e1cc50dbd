"""バッチ推論（model-in-image predict）：どんな大きさの入力も一定のメモリでチャンクごとに推論する。

readers が入力を行番号つきのチャンクにし、formats（テキスト）と tables（Arrow の表）が HTTP と
同じ検証と推論を BatchModel（model：データプレーンとの境目）で行い、writers が入力の順に書く。
チャンクが一括で読めない・検証できないときだけ 1 行ずつに戻り、不正な行の場所と理由を示す。
tables.FrameScorer はエンジンを知らない推論の関数で、Dask（batch.dask）・Ray・Spark に渡せる。
"""

from model_in_image.batch.base import STDIO, BatchError
from model_in_image.batch.columns import ColumnMatch
from model_in_image.batch.model import BatchModel, cached_batch_model, load_batch_model
from model_in_image.batch.progress import ProgressMode
from model_in_image.batch.readers import InputFormat
from model_in_image.batch.scoring import (
    MAX_CHUNK_ROWS,
    BatchOptions,
    BatchResult,
    run_batch,
)
from model_in_image.batch.tables import DEFAULT_CHUNK_ROWS, FrameScorer, Invalid
from model_in_image.batch.writers import OutputFormat

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "MAX_CHUNK_ROWS",
    "STDIO",
    "BatchError",
    "BatchModel",
    "BatchOptions",
    "BatchResult",
    "ColumnMatch",
    "FrameScorer",
    "InputFormat",
    "Invalid",
    "OutputFormat",
    "ProgressMode",
    "cached_batch_model",
    "load_batch_model",
    "run_batch",
]
