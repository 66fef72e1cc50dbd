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


@dataclass(frozen=True)
class MadeModel:
    """テストが学習して書き出したモデル（files）と、答えを比べるための元のモデルと入力。"""

    files: ModelFiles
    features: np.ndarray[Any, Any]
    class_names: list[str]

    def expected_proba(self) -> np.ndarray[Any, Any]:
        """元の scikit-learn モデルの predict_proba。"""
        return np.asarray(self.files.estimator.predict_proba(self.features))


def _classification(width: int, classes: int, seed: int) -> tuple[Any, Any]:
    from sklearn.datasets import make_classification

    return make_classification(
        n_samples=300,
        n_features=width,
        n_informative=min(width, max(2, classes + 1)),
        n_redundant=0,
        n_classes=classes,
        random_state=seed,
    )


def gradient_boosted(directory: Path, *, width: int = 12, classes: int = 5) -> MadeModel:
    """勾配ブースティングの木（ONNX の TreeEnsembleClassifier、float32 入力、ZipMap 出力）。"""
    from sklearn.ensemble import GradientBoostingClassifier

    features, target = _classification(width, classes, seed=1)
    features = features.astype(np.float32)
    estimator = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0)
    estimator.fit(features, target)
    return _write(directory, "churn_gbdt", estimator, features, classes, zipmap=True)


def logistic_double(directory: Path, *, width: int = 7, classes: int = 3) -> MadeModel:
    """多クラスのロジスティック回帰（float64 入力、確率はテンソル出力）。"""
    from sklearn.linear_model import LogisticRegression

    features, target = _classification(width, classes, seed=2)
    estimator = LogisticRegression(max_iter=1000).fit(features, target)
    return _write(directory, "fraud_lr", estimator, features, classes, zipmap=False)


def linear_regressor(directory: Path, *, width: int = 3, labels: int = 3) -> ModelFiles:
    """回帰モデル（分類器ではない：出力は [N, 1] の予測値）と、分類器のつもりのラベル。"""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(3)
    features = rng.normal(size=(50, width)).astype(np.float32)
    estimator = LinearRegression().fit(features, features.sum(axis=1))
    model = directory / "price_regressor.onnx"
    model.write_bytes(export_regressor(estimator, features[:1]))
    names = write_labels(directory / "labels.json", {str(i): f"c{i}" for i in range(labels)})
    return ModelFiles(model, names, estimator)


def export_regressor(estimator: Any, sample: np.ndarray[Any, Any]) -> bytes:
    """回帰モデルを skl2onnx で書き出す（分類器ではないモデルの例）。"""
    from skl2onnx import to_onnx

    onx = to_onnx(estimator, sample, target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()  # type: ignore[no-any-return]


def _write(
    directory: Path, name: str, estimator: Any, features: Any, classes: int, *, zipmap: bool
) -> MadeModel:
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / f"{name}.onnx"
    model.write_bytes(export_onnx(estimator, features[:1], zipmap=zipmap))
    class_names = [f"{name}_class_{i}" for i in range(classes)]
    labels = write_labels(directory / "labels.json", dict(enumerate(class_names)))
    return MadeModel(ModelFiles(model, labels, estimator), features, class_names)


def open_model(model: Path, labels: Path | None, sample: list[Any] | None = None) -> Any:
    """起動と同じ検証で作ったデータプレーン（sha256・モデル・クラス名・サンプル推論）。"""
    from model_in_image.loading import open_dataplane

    return open_dataplane(model, labels, name=model.stem, sample=sample)


def predict_rows(dataplane: Any, rows: Any) -> Any:
    """行を検証して推論した /predict の値（確率など）。"""
    return dataplane.predict(dataplane.validate(np.asarray(rows).tolist(), loc=("data",)))
