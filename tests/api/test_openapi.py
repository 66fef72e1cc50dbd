"""OpenAPI と Swagger UI：すべてのエンドポイントを記述し、POST ボディに例がある。"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

SEED_PATHS = {
    "/health": "get",
    "/metadata": "get",
    "/label": "get",
    "/predict/test": "get",
    "/predict/test/label": "get",
    "/predict": "post",
    "/predict/label": "post",
    "/livez": "get",
    "/readyz": "get",
}


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    """/openapi.json の内容。"""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def test_every_endpoint_is_described(openapi: dict[str, Any]) -> None:
    for path, method in SEED_PATHS.items():
        assert method in openapi["paths"].get(path, {}), path
        operation = openapi["paths"][path][method]
        assert operation["summary"]
        assert "200" in operation["responses"]


@pytest.mark.parametrize("path", ["/predict", "/predict/label"])
def test_post_body_has_an_example(openapi: dict[str, Any], path: str) -> None:
    operation = openapi["paths"][path]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    media = body["content"]["application/json"]
    example = media.get("example") or next(iter(media.get("examples", {}).values()))["value"]
    assert example == {"data": [[5.1, 3.5, 1.4, 0.2]]}
    assert "data" in media["schema"]["properties"]
    for status in ("400", "413", "415", "422"):
        assert status in operation["responses"], status


def test_example_from_the_docs_works(client: TestClient, openapi: dict[str, Any]) -> None:
    media = openapi["paths"]["/predict/label"]["post"]["requestBody"]["content"]["application/json"]
    example = media.get("example") or next(iter(media.get("examples", {}).values()))["value"]
    assert client.post("/predict/label", json=example).json() == {"prediction": "setosa"}


def test_swagger_ui(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text


def test_docs_work_offline(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "cdn.jsdelivr.net" not in html
    assert "unpkg.com" not in html
    for url in re.findall(r'(?:src|href)="(/[^"]+)"', html):
        assert client.get(url).status_code == 200, url
    redoc = client.get("/redoc")
    assert redoc.status_code == 200
    assert "cdn.jsdelivr.net" not in redoc.text


def test_docs_disabled_without_assets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi import FastAPI

    from model_in_image.api import docs

    monkeypatch.setattr("importlib.util.find_spec", lambda _name: None)
    assert docs.asset_dir() is None
    api = FastAPI(docs_url=None, redoc_url=None)
    docs.register_docs(api)
    assert TestClient(api).get("/docs").status_code == 404
    assert "API docs disabled" in caplog.text
