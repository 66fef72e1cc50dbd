"""バッチ推論の共通部品：標準入出力の印、エラー、pyarrow（任意の extra）の読み込み。"""

from __future__ import annotations

from typing import Any

from model_in_image.errors import ModelServerError

STDIO = "-"


class BatchError(ModelServerError):
    """バッチ推論を続けられない（入力の不正な行・読めない入力・書けない出力）。"""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


class RowError(Exception):
    """1 行が不正（理由と、分かれば列番号 1 始まり）。"""

    def __init__(self, reason: str, column: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.column = column


def require_pyarrow() -> tuple[Any, Any]:
    """pyarrow と pyarrow.parquet（無ければ入れ方を示す BatchError）。"""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BatchError(
            "Parquet needs pyarrow: install the extra, e.g. pip install 'model-in-image[parquet]'"
        ) from None
    return pq, pa
