"""本当の故障だけが 500（トレースバックなし）。未知のパス・メソッド・未準備。"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.errors import ModelLoadError
from support.apps import AppFactory, SettingsFactory

SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.mark.parametrize("path", ["/predict", "/predict/label"])
def test_model_fault_is_500_without_traceback(
    spy_app: AppFactory, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, spy = spy_app()
    spy.failures = 1
    with caplog.at_level(logging.ERROR):
        response = client.post(path, json=SETOSA)
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert "Traceback" not in response.text
    assert "simulated fault" not in response.text
    assert "simulated fault" in caplog.text  # ログには残る
    assert len(spy.calls) == 1

    again = client.post(path, json=SETOSA)
    assert again.status_code == 200
    assert client.get("/health").json() == {"health": "ok"}
    assert client.get("/readyz").status_code == 200


def test_get_on_post_route_is_405(client: TestClient) -> None:
    for path in ("/predict", "/predict/label"):
        response = client.get(path)
        assert response.status_code == 405
        assert response.json() == {"detail": "Method Not Allowed"}


def test_post_on_get_route_is_405(client: TestClient) -> None:
    response = client.post("/health", json={})
    assert response.status_code == 405


@pytest.mark.parametrize("path", ["/predict/", "/predict/label/", "/health/", "/v2/"])
def test_trailing_slash_is_not_redirected(client: TestClient, path: str) -> None:
    """307 で転送すると Location にクライアントの Host が写る：転送せず 404。"""
    response = client.post(path, json=SETOSA, headers={"host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


@pytest.mark.parametrize("path", ["/health", "/metadata", "/label", "/livez", "/v2", "/metrics"])
def test_head_on_get_routes_is_200_without_a_body(client: TestClient, path: str) -> None:
    get = client.get(path)
    head = client.head(path)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if path != "/metrics":  # メトリクスは呼ぶたびに値が変わる
        assert head.headers["content-length"] == str(len(get.content))


def test_head_on_post_route_is_405(client: TestClient) -> None:
    response = client.head("/predict")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/nope", "/predict/test/extra", "/Health", "/v1/predict"])
def test_unknown_path_is_404_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Not Found"}


class TestNotLoaded:
    """ライフスパン前（モデル未読み込み）：liveness は 200、それ以外は 503。"""

    def test_probes(self, app: ModelServerApp) -> None:
        client = TestClient(app)
        assert client.get("/livez").status_code == 200
        assert client.get("/health").status_code == 503
        assert client.get("/health").json() == {"health": "unavailable"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "loading"}

    @pytest.mark.parametrize(
        "path", ["/metadata", "/label", "/predict/test", "/predict/test/label"]
    )
    def test_model_routes(self, app: ModelServerApp, path: str) -> None:
        response = TestClient(app).get(path)
        assert response.status_code == 503
        assert response.json() == {"detail": "model is not loaded"}

    def test_predict(self, app: ModelServerApp) -> None:
        response = TestClient(app).post("/predict", json=SETOSA)
        assert response.status_code == 503


def test_draining_after_shutdown(app: ModelServerApp) -> None:
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "draining"}
    assert client.get("/livez").status_code == 200
    assert client.get("/health").status_code == 200  # モデルはまだ読み込まれている


def test_start_up_fails_fast_with_a_broken_model(
    make_settings: SettingsFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(model_filepath=tmp_path / "missing.onnx"))
    with pytest.raises(ModelLoadError, match="model file not found"), TestClient(app):
        pass
    assert "start-up failed" in caplog.text
