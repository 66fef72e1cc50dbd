"""教科書のモデル（skl2onnx 1.7・ZipMap 出力）をそのまま提供し、シードの数値を再現する。"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from model_in_image.settings import Settings

pytestmark = pytest.mark.reference

EXPECTED = [
    ([5.1, 3.5, 1.4, 0.2], [0.9709315896034241, 0.015583082102239132, 0.013485366478562355]),
    ([5.9, 3.0, 4.2, 1.5], [0.011699308641254902, 0.9584934115409851, 0.029807325452566147]),
    ([6.3, 2.9, 5.6, 1.8], [0.009140153415501118, 0.026690561324357986, 0.9641692638397217]),
]


@pytest.fixture
def reference_client(reference_dir: Path, clean_env: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """MODEL_FILEPATH・LABEL_FILEPATH・SAMPLE_DATA を環境変数で指定して起動する。"""
    clean_env.setenv("MODEL_FILEPATH", str(reference_dir / "iris_svc.onnx"))
    clean_env.setenv("LABEL_FILEPATH", str(reference_dir / "label.json"))
    clean_env.setenv("SAMPLE_DATA", "[[5.1, 3.5, 1.4, 0.2]]")
    with TestClient(create_app(Settings())) as client:
        yield client


@pytest.mark.parametrize(("row", "expected"), EXPECTED, ids=["setosa", "versicolor", "virginica"])
def test_seed_probabilities(
    reference_client: TestClient, row: list[float], expected: list[float]
) -> None:
    response = reference_client.post("/predict", json={"data": [row]})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["prediction"], expected, atol=1e-6, rtol=0)


def test_seed_probabilities_in_one_batch(reference_client: TestClient) -> None:
    rows = [row for row, _ in EXPECTED]
    response = reference_client.post("/predict", json={"data": rows})
    expected = [proba for _, proba in EXPECTED]
    np.testing.assert_allclose(response.json()["prediction"], expected, atol=1e-6, rtol=0)
    labels = reference_client.post("/predict/label", json={"data": rows}).json()
    assert labels == {"prediction": ["setosa", "versicolor", "virginica"]}


def test_metadata(reference_client: TestClient, reference_dir: Path) -> None:
    meta = reference_client.get("/metadata").json()
    np.testing.assert_allclose(meta["prediction_sample"], EXPECTED[0][1], atol=1e-6, rtol=0)
    assert meta["data_sample"] == [[5.1, 3.5, 1.4, 0.2]]
    assert meta["data_structure"] == "(1,4)"
    assert meta["prediction_structure"] == "(1,3)"
    assert (meta["data_type"], meta["prediction_type"]) == ("float32", "float32")
    assert meta["model_name"] == "iris_svc"
    assert meta["output_kind"] == "zipmap"
    assert meta["heldout_accuracy"] is None  # 教科書のモデルにはモデルカードがない
    assert (
        meta["model_sha256"]
        == hashlib.sha256((reference_dir / "iris_svc.onnx").read_bytes()).hexdigest()
    )
    assert reference_client.get("/label").json() == {
        "0": "setosa",
        "1": "versicolor",
        "2": "virginica",
    }
    assert reference_client.get("/predict/test/label").json() == {"prediction": "setosa"}
