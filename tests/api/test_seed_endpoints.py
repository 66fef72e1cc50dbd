"""シード API（003 §3）の各エンドポイントと応答の形。"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from support.samples import SETOSA

VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.3, 2.9, 5.6, 1.8]
LABELS = {"0": "setosa", "1": "versicolor", "2": "virginica"}


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"health": "ok"}
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "body"), [("/livez", {"status": "alive"}), ("/readyz", {"status": "ready"})]
)
def test_probes(client: TestClient, path: str, body: dict[str, str]) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == body


def test_metadata(client: TestClient, model_path: Path) -> None:
    meta = client.get("/metadata").json()
    assert meta["data_type"] == "float32"
    assert meta["data_structure"] == "(1,4)"
    assert meta["data_sample"] == [SETOSA]
    assert meta["prediction_type"] == "float32"
    assert meta["prediction_structure"] == "(1,3)"
    assert meta["prediction_sample"] == client.get("/predict/test").json()["prediction"]
    assert meta["model_name"] == "iris_svc"
    assert meta["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()


def test_label(client: TestClient) -> None:
    assert client.get("/label").json() == LABELS


def test_predict_test(client: TestClient) -> None:
    prediction = client.get("/predict/test").json()["prediction"]
    assert len(prediction) == 3
    assert all(isinstance(p, float) for p in prediction)
    assert sum(prediction) == pytest.approx(1.0, abs=1e-5)
    assert prediction == client.post("/predict", json={"data": [SETOSA]}).json()["prediction"]


def test_predict_test_label(client: TestClient) -> None:
    assert client.get("/predict/test/label").json() == {"prediction": "setosa"}


def test_predict_single_row_is_flat(client: TestClient) -> None:
    response = client.post("/predict", json={"data": [SETOSA]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    prediction = response.json()["prediction"]
    assert len(prediction) == 3
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in prediction)
    assert sum(prediction) == pytest.approx(1.0, abs=1e-5)
    assert max(range(3), key=prediction.__getitem__) == 0


@pytest.mark.parametrize(
    ("row", "species"), [(SETOSA, "setosa"), (VERSICOLOR, "versicolor"), (VIRGINICA, "virginica")]
)
def test_predict_label(client: TestClient, row: list[float], species: str) -> None:
    response = client.post("/predict/label", json={"data": [row]})
    assert response.status_code == 200
    assert response.json() == {"prediction": species}


def test_integers_are_accepted(client: TestClient) -> None:
    response = client.post("/predict/label", json={"data": [[5, 3, 1, 0]]})
    assert response.json() == {"prediction": "setosa"}


@pytest.mark.parametrize(
    "order", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 2, 0, 1, 0)], ids=lambda o: "-".join(map(str, o))
)
def test_batches_answer_every_row_in_order(client: TestClient, order: tuple[int, ...]) -> None:
    rows = [[SETOSA, VERSICOLOR, VIRGINICA][i] for i in order]
    expected = [list(LABELS.values())[i] for i in order]
    labels = client.post("/predict/label", json={"data": rows}).json()["prediction"]
    assert labels == expected
    proba = client.post("/predict", json={"data": rows}).json()["prediction"]
    assert len(proba) == len(rows)
    assert [max(range(3), key=row.__getitem__) for row in proba] == list(order)
    single = [client.post("/predict", json={"data": [r]}).json()["prediction"] for r in rows]
    np.testing.assert_allclose(proba, single, atol=1e-6)


def test_batch_at_the_row_limit(client: TestClient) -> None:
    rows = [SETOSA, VERSICOLOR, VIRGINICA] * 333 + [SETOSA]
    assert len(rows) == 1000
    response = client.post("/predict/label", json={"data": rows})
    assert response.status_code == 200
    labels = response.json()["prediction"]
    assert len(labels) == 1000
    assert labels[:4] == ["setosa", "versicolor", "virginica", "setosa"]


def test_json_with_charset_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/predict/label",
        content=b'{"data": [[5.1, 3.5, 1.4, 0.2]]}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.json() == {"prediction": "setosa"}


def test_unknown_fields_are_ignored(client: TestClient) -> None:
    response = client.post("/predict/label", json={"data": [SETOSA], "id": 7})
    assert response.json() == {"prediction": "setosa"}
