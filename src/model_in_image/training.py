"""再現可能な学習：Iris（scikit-learn 同梱）→ StandardScaler + SVC（確率は較正）→ ONNX。

学習用の依存（scikit-learn, skl2onnx, onnx）は train グループにだけある。
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from model_in_image.facts import ModelFacts
from model_in_image.loading import open_dataplane
from model_in_image.modelcard import ModelCard, reference_statistics

SEED = 42
TEST_SIZE = 0.2
TARGET_OPSET = 17
MODEL_FILE = "iris_svc.onnx"
LABEL_FILE = "label.json"
CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class TrainResult:
    """学習の成果物と精度。"""

    model_path: Path
    label_path: Path
    card_path: Path
    card: ModelCard


def build_pipeline(seed: int = SEED) -> Any:
    """標準化 + RBF SVC（Platt スケーリングで確率を較正）。

    SVC(probability=True) は scikit-learn 1.9 で非推奨のため使わない。
    ensemble=False：較正器は交差検証で学習し、SVC は全学習データで 1 つだけ（ONNX が小さく速い）。
    """
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from model_in_image.onnx_export import CalibratedSVC

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    svc = CalibratedSVC(
        SVC(kernel="rbf", C=1.0, gamma="scale"), method="sigmoid", cv=folds, ensemble=False
    )
    return Pipeline([("scaler", StandardScaler()), ("svc", svc)])


def to_onnx_bytes(pipeline: Any, sample: np.ndarray[Any, Any], name: str) -> bytes:
    """skl2onnx で ONNX に変換する（確率はテンソル出力、ZipMap なし）。"""
    from skl2onnx import to_onnx

    from model_in_image.onnx_export import register

    register()
    with warnings.catch_warnings():
        # skl2onnx が SVC の非推奨属性 probA_/probB_ を参照する警告（こちらの API 利用ではない）
        warnings.filterwarnings(
            "ignore", message="Attribute `prob[AB]_` was deprecated", category=FutureWarning
        )
        model = to_onnx(
            pipeline,
            sample,
            options={id(pipeline): {"zipmap": False}},
            target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
            naming=name,
        )
    model.graph.name = name
    # opset の並びは同じプロセスで先に変換したモデルに左右されるため、ドメイン順に固定する
    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version_ in imports:
        model.opset_import.add(domain=domain, version=version_)
    model.doc_string = "Iris SVC (model-in-image)"
    return model.SerializeToString()  # type: ignore[no-any-return]


def train(output_dir: Path, seed: int = SEED) -> TrainResult:
    """学習して ONNX・ラベル・モデルカードを書き出す（同じ seed なら同じバイト列）。"""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    features = iris.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        features, iris.target, test_size=TEST_SIZE, stratify=iris.target, random_state=seed
    )
    pipeline = build_pipeline(seed).fit(x_train, y_train)
    accuracy = float(pipeline.score(x_test, y_test))

    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = output_dir / MODEL_FILE
    model_path.write_bytes(to_onnx_bytes(pipeline, x_train[:1], "iris_svc"))
    labels = {str(i): str(name) for i, name in enumerate(iris.target_names)}
    label_path = output_dir / LABEL_FILE
    label_path.write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")

    facts = ModelFacts.of(open_dataplane(model_path, label_path, name="iris_svc"), "iris_svc")
    card = ModelCard(
        name=facts.name,
        model_file=MODEL_FILE,
        sha256=facts.sha256,
        input_name=facts.input_name,
        input_dtype=facts.input_dtype,
        input_width=features.shape[1],
        classes=list(labels.values()),
        output_kind=facts.output_kind,
        kind=facts.kind,
        inputs=facts.inputs,
        outputs=facts.outputs,
        postprocess=facts.postprocess,
        heldout_accuracy=round(accuracy, 6),
        sample_input=[features[0].astype(np.float64).round(6).tolist()],
        library_versions={p: version(p) for p in ("scikit-learn", "skl2onnx", "onnx", "numpy")},
        dataset="iris (scikit-learn bundled copy)",
        algorithm=(
            "StandardScaler + SVC(rbf) calibrated with "
            "CalibratedClassifierCV(sigmoid, 5-fold, ensemble=False)"
        ),
        seed=seed,
        test_size=TEST_SIZE,
        target_opset=TARGET_OPSET,
        feature_names=list(iris.feature_names),
        reference=reference_statistics(x_train, list(iris.feature_names)),
    )
    card_path = output_dir / CARD_FILE
    card.write(card_path)
    return TrainResult(model_path, label_path, card_path, card)
