"""/docs と /redoc は CDN を使わない：HTML は外部 URL を参照せず、資産はこのサーバーが返す。"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from model_in_image.api import docs
from model_in_image.api.app import create_app
from model_in_image.api.docs import ASSET_FILES, ASSETS_URL, asset_dir
from model_in_image.settings import Settings

URL_ATTR = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
ABSOLUTE_URL = re.compile(r"""(?i)(?:https?:)?//[a-z0-9.-]+""")


def test_assets_come_from_an_installed_package() -> None:
    directory = asset_dir()
    assert directory is not None, "the fastapi-offline package (docs assets) is not installed"
    assert all((directory / name).is_file() for name in ASSET_FILES)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_page_references_only_this_server(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert ABSOLUTE_URL.search(html) is None, ABSOLUTE_URL.findall(html)
    references = URL_ATTR.findall(html)
    assert references, "no script or stylesheet found"
    for reference in references:
        assert urlsplit(urljoin("http://testserver/docs", reference)).netloc == "testserver"
        asset = client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 1000, reference


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "javascript"),
        ("favicon.png", "image/png"),
    ],
)
def test_assets_are_served(client: TestClient, name: str, media: str) -> None:
    response = client.get(f"{ASSETS_URL}/{name}")
    assert response.status_code == 200
    assert media in response.headers["content-type"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_may_only_connect_to_this_server(client: TestClient, page: str) -> None:
    policy = client.get(page).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["connect-src"] == "'self'"


def test_swagger_does_not_call_the_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_docs_are_not_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith(("/docs", "/redoc", ASSETS_URL)) for p in paths)


def test_missing_assets_disable_docs_without_breaking_the_api(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setattr(docs, "asset_dir", lambda: None)
    with TestClient(create_app(settings)) as bare:
        assert bare.get("/docs").status_code == 404
        assert bare.get("/health").status_code == 200
