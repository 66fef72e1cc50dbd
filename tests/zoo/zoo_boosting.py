"""LightGBM・XGBoost（onnxmltools で書き出す）と CatBoost（自身の save_model）のケース。"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from catboost import CatBoostClassifier, CatBoostRegressor
from lightgbm import LGBMClassifier, LGBMRegressor
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from xgboost import XGBClassifier, XGBRegressor
from zoo_common import SEED, Built, case, classifier, f32, pick_rows, regressor
from zoo_sklearn import iris

_TREES = {"n_estimators": 10, "max_depth": 3}
# onnxmltools 1.16 が書ける opset は 15 まで
_OPSET = 15
LIGHTGBM = {
    "framework": "lightgbm",
    "exporter": "onnxmltools",
    "packages": ("lightgbm", "onnxmltools"),
}
XGBOOST = {
    "framework": "xgboost",
    "exporter": "onnxmltools",
    "packages": ("xgboost", "onnxmltools"),
}
CATBOOST = {"framework": "catboost", "exporter": "catboost", "packages": ("catboost",)}
_CATBOOST = {
    "iterations": 20,
    "depth": 3,
    "random_seed": SEED,
    "verbose": False,
    "allow_writing_files": False,  # catboost_info/ を作らない
}


def _initial(width: int) -> list[tuple[str, Any]]:
    return [("input", FloatTensorType([None, width]))]


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    data = load_diabetes()
    return f32(data.data), data.target


def _catboost_onnx(estimator: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        estimator.save_model(str(path), format="onnx")
        return path.read_bytes()


@case
def build_lightgbm_classifier() -> Built:
    """Iris の LGBMClassifier（onnxmltools、ZipMap の確率）。"""
    features, target = iris()
    estimator = LGBMClassifier(**_TREES, random_state=SEED, verbose=-1).fit(features, target)
    rows = features[pick_rows(target.tolist())]
    model = convert_lightgbm(estimator, initial_types=_initial(4), target_opset=_OPSET)
    return classifier(
        estimator,
        rows,
        model.SerializeToString(),
        name="lightgbm_classifier",
        description="LGBMClassifier on Iris (10 trees), onnxmltools.convert_lightgbm",
        head="probabilities",
        label_output="label",
        **LIGHTGBM,
    )


@case
def build_lightgbm_regressor() -> Built:
    """糖尿病データの LGBMRegressor。"""
    features, target = _diabetes()
    estimator = LGBMRegressor(**_TREES, random_state=SEED, verbose=-1).fit(features, target)
    model = convert_lightgbm(estimator, initial_types=_initial(10), target_opset=_OPSET)
    return regressor(
        estimator,
        features[:6],
        model.SerializeToString(),
        name="lightgbm_regressor",
        description="LGBMRegressor on diabetes (10 trees), onnxmltools.convert_lightgbm",
        head="variable",
        **LIGHTGBM,
    )


@case
def build_xgboost_classifier() -> Built:
    """乳がんデータ（10 特徴）の 2 クラスの XGBClassifier。"""
    data = load_breast_cancer()
    features, target = f32(data.data[:, :10]), data.target
    estimator = XGBClassifier(**_TREES, random_state=SEED, n_jobs=1).fit(features, target)
    model = convert_xgboost(estimator, initial_types=_initial(10), target_opset=_OPSET)
    return classifier(
        estimator,
        features[pick_rows(target.tolist())],
        model.SerializeToString(),
        name="xgboost_classifier",
        description="XGBClassifier (binary) on breast cancer, 10 features, "
        "onnxmltools.convert_xgboost",
        head="probabilities",
        label_output="label",
        **XGBOOST,
    )


@case
def build_xgboost_regressor() -> Built:
    """糖尿病データの XGBRegressor。"""
    features, target = _diabetes()
    estimator = XGBRegressor(**_TREES, random_state=SEED, n_jobs=1).fit(features, target)
    model = convert_xgboost(estimator, initial_types=_initial(10), target_opset=_OPSET)
    return regressor(
        estimator,
        features[:6],
        model.SerializeToString(),
        name="xgboost_regressor",
        description="XGBRegressor on diabetes, onnxmltools.convert_xgboost",
        head="variable",
        **XGBOOST,
    )


@case
def build_catboost_classifier() -> Built:
    """Wine の CatBoostClassifier（save_model(format="onnx")）。"""
    data = load_wine()
    features, target = f32(data.data), data.target
    estimator = CatBoostClassifier(**_CATBOOST, thread_count=1).fit(features, target)
    return classifier(
        estimator,
        features[pick_rows(target.tolist())],
        _catboost_onnx(estimator),
        name="catboost_classifier",
        description="CatBoostClassifier on wine (3 classes), save_model(format='onnx')",
        head="probabilities",
        label_output="label",
        **CATBOOST,
    )


@case
def build_catboost_regressor() -> Built:
    """糖尿病データの CatBoostRegressor。"""
    features, target = _diabetes()
    estimator = CatBoostRegressor(**_CATBOOST, thread_count=1).fit(features, target)
    return regressor(
        estimator,
        features[:6],
        _catboost_onnx(estimator),
        name="catboost_regressor",
        description="CatBoostRegressor on diabetes, save_model(format='onnx')",
        head="predictions",
        **CATBOOST,
    )
