"""不正な入力：モデルに届かず、5xx にならず、理由を示す JSON の 4xx を返す。"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
from fastapi.testclient import TestClient

from support.apps import AppFactory, SpyModel
from support.samples import JSON

ENDPOINTS = ["/predict", "/predict/label"]
ROW = "[5.1, 3.5, 1.4, 0.2]"

# (id, ボディ, ステータス, 422 の loc の先頭)
BAD_BODIES: list[tuple[str, bytes, int, list[Any] | None]] = [
    ("missing-data", b"{}", 422, ["body", "data"]),
    ("data-null", b'{"data": null}', 422, ["body", "data"]),
    ("empty-list", b'{"data": []}', 422, ["body", "data"]),
    ("flat-list", f'{{"data": {ROW}}}'.encode(), 422, ["body", "data", 0]),
    ("empty-row", b'{"data": [[]]}', 422, ["body", "data", 0]),
    ("narrow", b'{"data": [[5.1, 3.5, 1.4]]}', 422, ["body", "data", 0]),
    ("wide", b'{"data": [[5.1, 3.5, 1.4, 0.2, 9.9]]}', 422, ["body", "data", 0]),
    ("ragged", f'{{"data": [{ROW}, [5.9, 3.0]]}}'.encode(), 422, ["body", "data", 1]),
    ("3-d", b'{"data": [[[5.1], [3.5], [1.4], [0.2]]]}', 422, ["body", "data", 0, 0]),
    ("string", b'{"data": [["5.1", 3.5, 1.4, 0.2]]}', 422, ["body", "data", 0, 0]),
    ("boolean", b'{"data": [[5.1, true, 1.4, 0.2]]}', 422, ["body", "data", 0, 1]),
    ("null-value", b'{"data": [[5.1, 3.5, null, 0.2]]}', 422, ["body", "data", 0, 2]),
    ("object-row", b'{"data": [{"a": 1}]}', 422, ["body", "data", 0]),
    ("data-string", b'{"data": "5.1,3.5,1.4,0.2"}', 422, ["body", "data"]),
    ("float32-overflow", b'{"data": [[5.1, 3.5, 1.4, 1e39]]}', 422, ["body", "data", 0, 3]),
    ("float32-underflow", b'{"data": [[-3.5e38, 3.5, 1.4, 0.2]]}', 422, ["body", "data", 0, 0]),
    ("float64-overflow", b'{"data": [[5.1, 1e400, 1.4, 0.2]]}', 422, ["body", "data", 0, 1]),
    ("nonobject-array", b"[1, 2]", 422, ["body"]),
    ("nonobject-rows", f"[{ROW}]".encode(), 422, ["body"]),
    ("nonobject-null", b"null", 422, ["body"]),
    ("nonobject-number", b"42", 422, ["body"]),
    ("nan", b'{"data": [[NaN, 3.5, 1.4, 0.2]]}', 400, None),
    ("infinity", b'{"data": [[Infinity, 3.5, 1.4, 0.2]]}', 400, None),
    ("minus-infinity", b'{"data": [[-Infinity, 3.5, 1.4, 0.2]]}', 400, None),
    ("malformed", b'{"data": [[5.1, 3.5, 1.4, 0.2]]', 400, None),
    ("single-quotes", b"{'data': [[5.1, 3.5, 1.4, 0.2]]}", 400, None),
    ("trailing-garbage", f'{{"data": [{ROW}]}} x'.encode(), 400, None),
    ("empty-body", b"", 400, None),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [pytest.param(b, s, loc, id=i) for i, b, s, loc in BAD_BODIES],
)
def test_bad_body(
    spy_app: AppFactory, path: str, body: bytes, status: int, loc: list[Any] | None
) -> None:
    client, spy = spy_app()
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    if loc is None:
        assert isinstance(detail, str)
        assert "JSON" in detail
    else:
        assert isinstance(detail, list)
        assert len(detail) >= 1
        for item in detail:
            assert item["loc"][: len(loc)] == loc
            assert isinstance(item["msg"], str)
            assert item["msg"]
            assert isinstance(item["type"], str)
    assert "Traceback" not in response.text
    assert spy.calls == []


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/json", "multipart/form-data; boundary=x"]
)
def test_wrong_content_type_is_415(spy_app: AppFactory, path: str, content_type: str) -> None:
    client, spy = spy_app()
    response = client.post(
        path, content=f'{{"data": [{ROW}]}}', headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert content_type in response.json()["detail"]
    assert spy.calls == []


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "Application/X-WWW-Form-Urlencoded; charset=utf-8"},
    ],
    ids=["missing", "form", "form-with-charset"],
)
def test_json_body_without_json_content_type(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    """curl -d の既定（フォーム）や Content-Type なしでも、ボディが JSON なら JSON と同じ応答。"""
    body = f'\n {{"data": [{ROW}]}}'
    expected = client.post(path, content=body, headers=JSON)
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == expected.json()


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("body", [b"data=5.1,3.5,1.4,0.2", b"", b"  "])
def test_form_body_that_is_not_json_is_415(spy_app: AppFactory, path: str, body: bytes) -> None:
    client, spy = spy_app()
    form = "application/x-www-form-urlencoded"
    response = client.post(path, content=body, headers={"content-type": form})
    assert response.status_code == 415
    detail = f"Content-Type must be application/json, got '{form}' with a body that is not JSON"
    assert response.json() == {"detail": detail}
    assert spy.calls == []


@pytest.mark.parametrize("path", ENDPOINTS)
def test_form_body_that_is_broken_json_is_400(spy_app: AppFactory, path: str) -> None:
    """JSON に見えるが壊れたボディは、Content-Type が JSON のときと同じ 400。"""
    client, spy = spy_app()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = client.post(path, content=f'{{"data": [{ROW}]', headers=headers)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Invalid JSON: ")
    assert spy.calls == []


@pytest.mark.parametrize("path", ENDPOINTS)
def test_more_rows_than_the_limit_is_422(spy_app: AppFactory, path: str) -> None:
    client, spy = spy_app(max_request_rows=5)
    assert client.post(
        path, content=f'{{"data": [{",".join([ROW] * 5)}]}}', headers=JSON
    ).is_success
    spy.calls.clear()
    response = client.post(path, content=f'{{"data": [{",".join([ROW] * 6)}]}}', headers=JSON)
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "data"]
    assert "6 > limit 5" in item["msg"]
    assert spy.calls == []


def test_default_row_limit_is_1000(spy_app: AppFactory) -> None:
    client, spy = spy_app()
    response = client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]] * 1001})
    assert response.status_code == 422
    assert "1001 > limit 1000" in response.json()["detail"][0]["msg"]
    assert spy.calls == []


def _oversized(limit: int) -> bytes:
    rows = ",".join([ROW] * (limit // len(ROW) + 1))
    body = f'{{"data": [{rows}]}}'.encode()
    assert len(body) > limit
    return body


@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_over_the_limit_with_content_length_is_413(spy_app: AppFactory, path: str) -> None:
    client, spy = spy_app(max_body_bytes=2048)
    response = client.post(path, content=_oversized(2048), headers=JSON)
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]
    assert spy.calls == []


@pytest.mark.parametrize("path", ENDPOINTS)
def test_streamed_body_over_the_limit_is_413(spy_app: AppFactory, path: str) -> None:
    client, spy = spy_app(max_body_bytes=2048)
    body = _oversized(2048)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    response = client.post(path, content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert spy.calls == []


def test_body_just_under_the_limit_is_accepted(spy_app: AppFactory) -> None:
    client, _ = spy_app(max_body_bytes=2048)
    body = f'{{"data": [{ROW}]}}'.encode().ljust(2048)
    response = client.post("/predict/label", content=body, headers=JSON)
    assert response.status_code == 200
    assert response.json() == {"prediction": "setosa"}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=20,
)


@pytest.fixture
def fuzz_app(spy_app: AppFactory) -> tuple[TestClient, SpyModel]:
    """ファジングの全例で共有するアプリ（状態を持たない）。"""
    return spy_app()


@hypothesis.settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(data=_json_values | st.fixed_dictionaries({"data": _json_values}))
def test_arbitrary_json_never_gives_5xx(fuzz_app: tuple[TestClient, SpyModel], data: Any) -> None:
    client, spy = fuzz_app
    spy.calls.clear()
    response = client.post("/predict", content=json.dumps(data), headers=JSON)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert "detail" in response.json()
        assert spy.calls == []
