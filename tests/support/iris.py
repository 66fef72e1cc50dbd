"""Iris の学習データ（train() と同じ分割・seed）と、その分布から引いた行。"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def training_split() -> tuple[Array, Array]:
    """train() が学習とモデルカードの参照分布に使う分割（x_train, y_train）。"""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    from model_in_image.training import SEED, TEST_SIZE

    iris = load_iris()
    features = iris.data.astype(np.float32)
    x_train, _, y_train, _ = train_test_split(
        features, iris.target, test_size=TEST_SIZE, stratify=iris.target, random_state=SEED
    )
    return x_train, y_train


def training_rows(count: int, seed: int = 0) -> Array:
    """学習データから復元抽出した count 行（学習時と同じ分布の入力）。"""
    x_train, _ = training_split()
    return x_train[np.random.default_rng(seed).integers(0, len(x_train), size=count)]
