"""ユニットテスト用のフィクスチャ：tmp に学習・書き出したモデル。"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from model_in_image.training import TrainResult, train
from support.iris import training_split
from support.models import ModelFiles, export_onnx, write_labels
from support.samples import IRIS_LABELS


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """tmp に一度だけ学習した成果物。"""
    return train(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def iris_pipeline() -> Any:
    """train() と同じ分割・seed で学習した scikit-learn パイプライン。"""
    from model_in_image.training import SEED, build_pipeline

    x_train, y_train = training_split()
    return build_pipeline(SEED).fit(x_train, y_train)


@pytest.fixture(scope="session")
def zipmap_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """Iris の scikit-learn パイプラインを ZipMap 出力で書き出したもの（教科書と同じ形式）。"""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris()
    features = iris.data.astype(np.float32)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, iris.target)
    directory = tmp_path_factory.mktemp("zipmap")
    model = directory / "iris_zipmap.onnx"
    model.write_bytes(export_onnx(pipeline, features[:1], zipmap=True))
    labels = write_labels(directory / "label.json", IRIS_LABELS)
    return ModelFiles(model, labels, pipeline)


def _binary_data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5))
    target = (features[:, 0] + features[:, 4] > 0).astype(np.int64)
    return features, target


@pytest.fixture(scope="session")
def binary_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """Iris と無関係な分類器：特徴量 5・クラス 2 の LogisticRegression（テンソル出力）。"""
    from sklearn.linear_model import LogisticRegression

    features, target = _binary_data()
    estimator = LogisticRegression().fit(features.astype(np.float32), target)
    directory = tmp_path_factory.mktemp("binary")
    model = directory / "binary_lr.onnx"
    model.write_bytes(export_onnx(estimator, features[:1].astype(np.float32), zipmap=False))
    labels = write_labels(directory / "label.json", {"0": "negative", "1": "positive"})
    return ModelFiles(model, labels)


@pytest.fixture(scope="session")
def double_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """float64 入力・テンソル出力の 2 クラス分類器。"""
    from sklearn.linear_model import LogisticRegression

    features, target = _binary_data()
    estimator = LogisticRegression().fit(features, target)
    directory = tmp_path_factory.mktemp("double")
    model = directory / "binary_double.onnx"
    model.write_bytes(export_onnx(estimator, features[:1], zipmap=False))
    labels = write_labels(directory / "label.json", {"0": "no", "1": "yes"})
    return ModelFiles(model, labels)
