"""Triton の分類拡張の期待値：確率（やロジット）の行列から上位 k の "score:index[:label]" を作る。

サーバーの実装（numpy の安定な argsort と f 書式）とは別の道筋：Python の sorted と % 書式。
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from model_in_image.settings import Settings
from support.env import clear_settings_env
from support.zoo import load_case

# "0.970000:0:setosa" の score は C の %f（小数 6 桁）
SCORE_DIGITS = 6
# 分類できない出力：(動物園のケース, 出力, 誤りの文の一部)
UNCLASSIFIABLE = [
    ("sklearn_linear_regression", "variable", "has one value per row"),
    ("catboost_regressor", "predictions", "has one value per row"),
    ("sklearn_kmeans", "scores", "holds no class scores"),
    ("sklearn_kmeans", "label", "has one value per row"),
]


def expected_top_k(scores: Any, k: int, labels: Sequence[str] | None) -> list[list[str]]:
    """行ごとの上位 k（値の大きい順、同じ値は列の番号の小さい順）の文字列。"""
    result = []
    for row in np.asarray(scores, dtype=np.float64).tolist():
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        items = []
        for index in order:
            text = "%f:%d" % (row[index], index)  # noqa: UP031 (C の printf と同じ書式で作る)
            items.append(text if labels is None else f"{text}:{labels[index]}")
        result.append(items)
    return result


def as_strings(values: Any) -> list[list[str]]:
    """tritonclient の as_numpy（bytes か str の [N, k]）を文字列の行のリストにする。"""
    return [
        [v.decode() if isinstance(v, bytes) else str(v) for v in row]
        for row in np.asarray(values, dtype=object).tolist()
    ]


def parse(item: str) -> tuple[float, int, str | None]:
    """ "score:index[:label]" を分ける（label に ":" があってもよい）。"""
    score, index, *label = item.split(":", 2)
    return float(score), int(index), label[0] if label else None


def assert_top_k(
    got: list[list[str]],
    scores: Any,
    k: int,
    labels: Sequence[str] | None,
    atol: float = 1e-5,
) -> None:
    """上位 k が scores（onnxruntime の値）の並べ替えと合うこと。

    値が atol 以内で並ぶ列は順が入れ替わってもよい（スレッド数の違いで最後の桁が変わりうる）。
    """
    matrix = np.asarray(scores, dtype=np.float64)
    k = min(k, matrix.shape[1])
    want = np.argsort(-matrix, axis=1, kind="stable")[:, :k]
    assert len(got) == len(matrix)
    for row, (items, expected) in enumerate(zip(got, want.tolist(), strict=True)):
        assert len(items) == k, items
        for item, index in zip(items, expected, strict=True):
            score, got_index, label = parse(item)
            assert len(item.split(":")[0].split(".")[1]) == SCORE_DIGITS, item
            assert abs(score - matrix[row, got_index]) <= atol, (item, matrix[row])
            if got_index != index:
                assert abs(matrix[row, got_index] - matrix[row, index]) <= atol, (item, index)
            assert label == (None if labels is None else labels[got_index]), item
        assert len({parse(item)[1] for item in items}) == k, items


@contextlib.contextmanager
def app_client(**settings: Any) -> Iterator[TestClient]:
    """設定の環境変数を切り離してアプリを起動する（プロセスの中、ネットワークなし）。"""
    with pytest.MonkeyPatch.context() as mp:
        clear_settings_env(mp)
        with TestClient(create_app(Settings(**settings))) as client:
            yield client


def zoo_client(name: str, **settings: Any) -> contextlib.AbstractContextManager[TestClient]:
    """動物園のケースのモデルで起動したアプリ。"""
    case = load_case(name)
    return app_client(model_filepath=case.model, sample_data=case.rows[:1], **settings)


@contextlib.contextmanager
def zoo_clients() -> Iterator[Callable[[str], TestClient]]:
    """名前で動物園のアプリを返す関数（各ケースは初めて使うときに一度だけ起動する）。"""
    with contextlib.ExitStack() as stack:
        opened: dict[str, TestClient] = {}

        def client_for(name: str) -> TestClient:
            if name not in opened:
                opened[name] = stack.enter_context(zoo_client(name))
            return opened[name]

        yield client_for
