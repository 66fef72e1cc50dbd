"""/metrics：既定で Prometheus のテキスト形式、METRICS_ENABLED=false なら 404。"""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from support.apps import SettingsFactory


def test_metrics_count_requests(client: TestClient) -> None:
    client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
    client.get("/nope")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "model_in_image_requests" in response.text


def test_metrics_disabled(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(metrics_enabled=False))) as client:
        response = client.get("/metrics")
        assert response.status_code == 404
        assert response.json() == {"detail": "metrics are disabled"}
        assert client.get("/health").status_code == 200


def test_startup_freezes_the_heap(make_settings: SettingsFactory) -> None:
    """起動後の長寿命オブジェクトは gc.freeze で完全 GC の対象から外れる。"""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() > 10_000
