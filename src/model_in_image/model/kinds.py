"""モデルの種類と後処理（グラフの出力とプローブの推論から導く）。"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

# 確率の行和と 1 との差の許容
PROBABILITY_SUM_TOLERANCE = 1e-3
_LABEL_TYPES = frozenset({"tensor(int64)", "tensor(string)", "tensor(int32)"})


class ModelKind(StrEnum):
    """提供の仕方を決めるモデルの種類。"""

    CLASSIFIER = "classifier"  # ラベルの出力と確率（ZipMap またはテンソル）
    PROBABILITIES = "probabilities"  # [N, C] の確率だけを出すネット
    LOGITS = "logits"  # [N, C] の実数（確率ではない）を出すネット
    REGRESSOR = "regressor"  # 実数 [N] / [N, 1] / [N, k]
    TENSOR = "tensor"  # そのほか（例: KMeans の label と scores）：グラフの名前のまま


class Postprocess(StrEnum):
    """ロジットを確率にする後処理（MODEL_POSTPROCESS）。"""

    NONE = "none"
    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"


def is_label_output(onnx_type: str, shape: tuple[int | None, ...]) -> bool:
    """クラスの出力か（整数か文字列の [N] または [N, 1]）。"""
    return onnx_type in _LABEL_TYPES and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))


def is_distribution(values: npt.NDArray[np.float64]) -> bool:
    """各行が確率の分布か（有限・0〜1・行和が 1）。"""
    rows = values.reshape(len(values), -1)
    if rows.shape[1] < 2 or not np.isfinite(rows).all():
        return False
    in_range = bool(((rows >= 0) & (rows <= 1 + PROBABILITY_SUM_TOLERANCE)).all())
    return in_range and bool(np.allclose(rows.sum(axis=1), 1.0, atol=PROBABILITY_SUM_TOLERANCE))


def softmax(values: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """行ごとの softmax（桁あふれしないよう最大値を引く）。"""
    shifted = values - values.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def sigmoid(values: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """シグモイド。1 列なら [1 - p, p] の 2 クラスにする。"""
    p = 1.0 / (1.0 + np.exp(-values))
    if p.ndim == 1 or p.shape[1] == 1:
        p = p.reshape(-1, 1)
        return np.concatenate([1.0 - p, p], axis=1)
    return p  # type: ignore[no-any-return]
