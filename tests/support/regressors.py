"""テストが学習する小さな回帰モデル（scikit-learn の LinearRegression → skl2onnx）と参照データ。"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from support.models import export_regressor

WEIGHTS = (1.0, -2.0, 0.5, 1.5)


@dataclass(frozen=True)
class Regressor:
    """書き出した回帰モデル、学習に使った行（float32）と、その行の参照データの CSV。"""

    model: Path
    features: np.ndarray[Any, Any]
    estimator: Any
    reference: Path

    def predict(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """元の scikit-learn モデルの予測（[N] または [N, k]）。"""
        return np.asarray(self.estimator.predict(rows))

    def one_sd_shift(self) -> np.ndarray[Any, Any]:
        """入力に足すと最初の目的変数の予測が標準偏差 1 つ分だけ上がるずれ（重みの向き）。"""
        weights = np.asarray(self.estimator.coef_).reshape(-1, self.features.shape[1])[0]
        sd = float(np.std(self.predict(self.features).reshape(len(self.features), -1)[:, 0]))
        return (weights * sd / float(weights @ weights)).astype(np.float32)


def normal_rows(rows: int, width: int = len(WEIGHTS), *, seed: int) -> np.ndarray[Any, Any]:
    """標準正規分布の行（float32）。"""
    return np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)


def linear_regression(
    directory: Path, *, rows: int = 2000, targets: int = 1, seed: int = 0
) -> Regressor:
    """y = X·w + 3（targets=2 なら 2 つ目は −2y + 1）の LinearRegression を学習して書き出す。"""
    from sklearn.linear_model import LinearRegression

    directory.mkdir(parents=True, exist_ok=True)
    features = normal_rows(rows, seed=seed)
    target = features.astype(np.float64) @ np.array(WEIGHTS) + 3.0
    if targets == 2:
        target = np.column_stack([target, -2.0 * target + 1.0])
    estimator = LinearRegression().fit(features, target)
    model = directory / "price.onnx"
    model.write_bytes(export_regressor(estimator, features[:1]))
    reference = directory / "reference.csv"
    header = ",".join(f"f{i}" for i in range(features.shape[1]))
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in features)
    reference.write_text(f"{header}\n{body}\n", encoding="utf-8")
    return Regressor(model, features, estimator, reference)
