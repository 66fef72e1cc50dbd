"""FastAPI に登録したルートは高速経路と同じハンドラ：同じステータス・同じボディ。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from support.apps import SettingsFactory

# (メソッド, パス, ボディ, Content-Type)
CASES = [
    ("GET", "/health", None, None),
    ("GET", "/readyz", None, None),
    ("GET", "/metadata", None, None),
    ("GET", "/label", None, None),
    ("GET", "/predict/test", None, None),
    ("GET", "/predict/test/label", None, None),
    (
        "POST",
        "/predict",
        b'{"data": [[5.1, 3.5, 1.4, 0.2], [6.3, 2.9, 5.6, 1.8]]}',
        "application/json",
    ),
    ("POST", "/predict/label", b'{"data": [[5.9, 3.0, 4.2, 1.5]]}', "application/json"),
    ("POST", "/predict", b'{"data": [[5.1, 3.5, 1.4]]}', "application/json"),
    ("POST", "/predict/label", b'{"data": [[5.1, true, 1.4, 0.2]]}', "application/json"),
    ("POST", "/predict", b"{}", "application/json"),
    ("POST", "/predict", b'{"data": [[NaN, 1, 1, 1]]}', "application/json"),
    ("POST", "/predict", b'{"data": [[1, 1, 1, 1]]}', "text/plain"),
    (
        "POST",
        "/predict",
        b'{"data": [' + b"[1, 1, 1, 1]," * 200 + b"[1, 1, 1, 1]]}",
        "application/json",
    ),
]


@pytest.fixture
def clients(make_settings: SettingsFactory) -> Iterator[tuple[TestClient, TestClient]]:
    """同じアプリの外側（高速経路）と内側の FastAPI（app.api）へのクライアント。"""
    app = create_app(make_settings(max_body_bytes=2048))
    with TestClient(app) as hot, TestClient(app.api) as routed:
        yield hot, routed


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type"),
    CASES,
    ids=[f"{m}-{p}-{i}" for i, (m, p, _, _) in enumerate(CASES)],
)
def test_same_answer_on_both_paths(
    clients: tuple[TestClient, TestClient],
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    hot, routed = clients
    expected = hot.request(method, path, content=body, headers=headers)
    actual = routed.request(method, path, content=body, headers=headers)
    assert (actual.status_code, actual.content) == (expected.status_code, expected.content)
    assert actual.headers["content-type"] == expected.headers["content-type"]
