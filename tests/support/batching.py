"""適応バッチのテストの補助：同時に送る、別々の入力を作る、バッチのメトリクスを読む。"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from support.prometheus import value

T = TypeVar("T")
R = TypeVar("R")
THREADS = 32
# 並行に送ったリクエストが確実にまとまる遅延（ミリ秒。速さではなく、まとまることを試す）
MERGE_DELAY_MS = 20.0


def concurrently(send: Callable[[T], R], items: Iterable[T], threads: int = THREADS) -> list[R]:
    """items をスレッドで同時に送り、入力の順に結果を返す。"""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(send, items))


def iris_requests(count: int, seed: int = 0, max_rows: int = 5) -> list[list[list[float]]]:
    """互いに異なる Iris の行の組（1〜max_rows 行）。"""
    rng = np.random.default_rng(seed)
    low, high = (4.3, 2.0, 1.0, 0.1), (7.9, 4.4, 6.9, 2.5)
    return [
        rng.uniform(low, high, (int(rng.integers(1, max_rows + 1)), 4)).round(2).tolist()
        for _ in range(count)
    ]


def batch_stats(metrics: str) -> dict[str, float]:
    """/metrics のテキストから適応バッチの数（推論の回数・まとめたリクエスト・待ちの件数・行）。"""
    names = {
        "batches": "model_in_image_batch_requests_count",
        "requests": "model_in_image_batch_requests_sum",
        "waits": "model_in_image_batch_queue_wait_seconds_count",
        "rows": "model_in_image_inference_batch_rows_sum",
        "runs": "model_in_image_inference_batch_rows_count",
    }
    return {key: value(metrics, name) or 0.0 for key, name in names.items()}


def v2_body(rows: list[Any], name: str = "input", datatype: str = "FP32") -> dict[str, Any]:
    """[N, 幅] の 1 入力の V2 REST のリクエスト。"""
    shape = [len(rows), *np.shape(rows)[1:]]
    flat = np.asarray(rows, dtype=object).ravel().tolist()
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": flat}]}
