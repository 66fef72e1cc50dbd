"""テストが自分で作るモデル（scikit-learn → skl2onnx）とラベルファイル。"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelFiles:
    """書き出したモデルとラベル（estimator は元の scikit-learn モデル）。"""

    model: Path
    labels: Path
    estimator: Any = None


def write_labels(path: Path, labels: Any) -> Path:
    """ラベルファイルを書く（不正な内容もそのまま書ける）。"""
    path.write_text(json.dumps(labels), encoding="utf-8")
    return path


def export_onnx(estimator: Any, sample: np.ndarray[Any, Any], *, zipmap: bool) -> bytes:
    """skl2onnx で書き出す（skl2onnx 自身の FutureWarning だけを抑える）。"""
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attribute `prob[AB]_` was deprecated")
        onx = to_onnx(
            estimator,
            sample,
            options={id(estimator): {"zipmap": zipmap}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    return onx.SerializeToString()  # type: ignore[no-any-return]


def export_regressor(estimator: Any, sample: np.ndarray[Any, Any]) -> bytes:
    """回帰モデルを skl2onnx で書き出す（分類器ではないモデルの例）。"""
    from skl2onnx import to_onnx

    onx = to_onnx(estimator, sample, target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()  # type: ignore[no-any-return]
