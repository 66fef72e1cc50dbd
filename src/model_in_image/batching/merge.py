"""バッチの合成と分割：検証済みの入力をつなぎ、グラフの出力をリクエストごとの行に切り分ける。"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from model_in_image.model.onnx_model import Feeds

# 同じ鍵のリクエストだけをまとめる：入力ごとの (名前, dtype, バッチより後の形) と求める出力
Key = tuple[Hashable, ...]


class RowCountMismatchError(Exception):
    """グラフの出力の行数が入力の行数と違う（行ごとの出力でない：まとめられないモデル）。"""


def key_of(feeds: Feeds, names: Sequence[str] | None) -> Key:
    """まとめてよいかの鍵（形はバッチの次元を除く。names は求める出力、None は全部）。"""
    inputs = tuple((name, array.dtype.str, array.shape[1:]) for name, array in feeds.items())
    return (None if names is None else tuple(names), *inputs)


def merge(parts: Sequence[Feeds]) -> Feeds:
    """同じ鍵の入力を行の方向につなぐ。"""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def split(outputs: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
    """つないで推論した出力を、各リクエストの行数で切り分ける（行数が合わなければ例外）。

    出力は配列か ZipMap の辞書のリスト。どちらも行の数は len で、切り分けはスライスで。
    """
    total = sum(sizes)
    for output in outputs:
        rows = rows_of(output)
        if rows != total:
            got = "a scalar" if rows is None else f"{rows} rows"
            raise RowCountMismatchError(f"the model returned {got} for {total} input rows")
    pieces: list[list[Any]] = []
    start = 0
    for size in sizes:
        pieces.append([output[start : start + size] for output in outputs])
        start += size
    return pieces


def rows_of(output: Any) -> int | None:
    """出力 1 つの行数（スカラーは None）。"""
    if isinstance(output, list):
        return len(output)
    shape = np.shape(output)
    return int(shape[0]) if shape else None
