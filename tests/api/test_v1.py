"""KServe V1 プロトコル：/v1/models/{name} と :predict（KServe の sklearn サーバーと同じ形）。"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from support.apps import SettingsFactory
from support.models import export_regressor
from support.samples import SETOSA

MODEL = "iris_svc"
PREDICT = f"/v1/models/{MODEL}:predict"


def test_model_status(client: TestClient) -> None:
    response = client.get(f"/v1/models/{MODEL}")
    assert response.status_code == 200
    assert response.json() == {"name": MODEL, "ready": True}


def test_predict_instances_gives_class_names(client: TestClient) -> None:
    rows = [SETOSA, [6.3, 2.9, 5.6, 1.8]]
    for key in ("instances", "inputs"):
        response = client.post(PREDICT, json={key: rows})
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": ["setosa", "virginica"]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, 'exactly one of "instances" or "inputs"'),
        ({"instances": [SETOSA], "inputs": [SETOSA]}, "exactly one of"),
        ({"instances": "x"}, "invalid V1 request"),
        ({"instances": [[1, 2]]}, "expects 4"),
        ({"instances": []}, "at least one row"),
    ],
)
def test_bad_requests_are_400(client: TestClient, body: object, fragment: str) -> None:
    response = client.post(PREDICT, json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


def test_unknown_model_is_404(client: TestClient) -> None:
    assert client.get("/v1/models/resnet").status_code == 404
    response = client.post("/v1/models/resnet:predict", json={"instances": [SETOSA]})
    assert response.status_code == 404
    assert "unknown model" in response.json()["error"]


def test_a_regressor_predicts_values(make_settings: SettingsFactory, tmp_path: Path) -> None:
    import numpy as np
    from sklearn.linear_model import LinearRegression

    features = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    regressor = LinearRegression().fit(features, features.sum(axis=1) * 3)
    model = tmp_path / "price.onnx"
    model.write_bytes(export_regressor(regressor, features[:1]))
    with TestClient(create_app(make_settings(model_filepath=model, label_filepath=None))) as c:
        response = c.post("/v1/models/price:predict", json={"instances": features[:3].tolist()})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(
            response.json()["predictions"], regressor.predict(features[:3]), atol=1e-4
        )
