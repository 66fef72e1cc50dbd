"""学習：再現性・scikit-learn と ONNX Runtime の一致・精度の記録・警告なし。"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_in_image.modelcard import ModelCard
from model_in_image.runtime import sha256_of
from model_in_image.training import SEED, TEST_SIZE, TrainResult, build_pipeline, train
from support.models import open_model, predict_rows
from support.paths import REPO_ROOT

SPECIES = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([5.9, 3.0, 4.2, 1.5], "versicolor"),
    ([6.3, 2.9, 5.6, 1.8], "virginica"),
]


def _iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_iris

    iris = load_iris()
    return iris.data.astype(np.float32), iris.target


def test_train_writes_model_labels_and_card(trained: TrainResult) -> None:
    assert trained.model_path.name == "iris_svc.onnx"
    labels = json.loads(trained.label_path.read_text(encoding="utf-8"))
    assert labels == {"0": "setosa", "1": "versicolor", "2": "virginica"}
    card = ModelCard.read(trained.card_path)
    assert card == trained.card
    assert card.sha256 == sha256_of(trained.model_path)
    assert card.model_file == trained.model_path.name
    assert card.input_width == 4
    assert card.classes == ["setosa", "versicolor", "virginica"]
    assert card.sample_input == [[5.1, 3.5, 1.4, 0.2]]
    assert set(card.library_versions) == {"scikit-learn", "skl2onnx", "onnx", "numpy"}


def test_train_is_reproducible_and_silent(trained: TrainResult, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = train(tmp_path)
    assert [str(w.message) for w in caught] == []
    assert again.model_path.read_bytes() == trained.model_path.read_bytes()
    assert again.card_path.read_bytes() == trained.card_path.read_bytes()
    assert again.label_path.read_bytes() == trained.label_path.read_bytes()


def test_pipeline_does_not_use_deprecated_svc_probability() -> None:
    calibrated = build_pipeline().named_steps["svc"]
    assert calibrated.estimator.probability is not True
    assert calibrated.method == "sigmoid"


def test_onnx_matches_sklearn_on_all_iris_rows(trained: TrainResult, iris_pipeline: Any) -> None:
    features, _ = _iris()
    classifier = open_model(trained.model_path, trained.label_path)
    onnx_proba = predict_rows(classifier, features)
    assert onnx_proba.shape == (150, 3)
    np.testing.assert_allclose(onnx_proba, iris_pipeline.predict_proba(features), atol=1e-5, rtol=0)


def test_heldout_accuracy_is_recorded(trained: TrainResult, iris_pipeline: Any) -> None:
    from sklearn.model_selection import train_test_split

    features, target = _iris()
    _, x_test, _, y_test = train_test_split(
        features, target, test_size=TEST_SIZE, stratify=target, random_state=SEED
    )
    expected = round(float(iris_pipeline.score(x_test, y_test)), 6)
    assert trained.card.heldout_accuracy == expected
    assert expected >= 0.9


def test_committed_model_is_the_trained_model(trained: TrainResult, models_dir: Path) -> None:
    committed = ModelCard.read(models_dir / "model_card.json")
    current = {name: version(name) for name in committed.library_versions}
    if current != committed.library_versions:
        pytest.skip(
            f"library versions differ from the card: {current} != {committed.library_versions}"
        )
    assert (models_dir / "iris_svc.onnx").read_bytes() == trained.model_path.read_bytes()
    assert (models_dir / "model_card.json").read_bytes() == trained.card_path.read_bytes()
    assert (models_dir / "label.json").read_bytes() == trained.label_path.read_bytes()


@pytest.mark.parametrize(("row", "species"), SPECIES, ids=[s for _, s in SPECIES])
def test_project_model_classifies_the_three_species(
    model_path: Path, label_path: Path, row: list[float], species: str
) -> None:
    classifier = open_model(model_path, label_path)
    proba = predict_rows(classifier, np.array([row], dtype=np.float32))
    assert classifier.labels_of(proba) == [species]


def test_node_counts_in_the_docs_match_the_model(trained: TrainResult) -> None:
    """ドキュメントとコメントのノード数は書き出したモデルのもの（数字がずれないように）。"""
    import onnx

    from model_in_image import onnx_export

    nodes = [node.op_type for node in onnx.load(trained.model_path).graph.node]
    total, converter = len(nodes), len(nodes) - nodes.count("Scaler")
    docs = (REPO_ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    for text in (docs, onnx_export.__doc__ or ""):
        assert f"{converter} ノード" in text
        assert f"モデル全体で {total} ノード" in text
