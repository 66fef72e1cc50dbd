"""V2 のエラー：{"error": ...} と 400 / 404 / 413 / 415 / 503。5xx にならない。"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.settings import Settings
from support.samples import JSON, MODEL, SETOSA
from support.samples import V2_INFER as INFER
from support.v2 import HEADER, infer_body


def tensor(**fields: Any) -> dict[str, Any]:
    """既定は正しい FP32 の入力 1 行。"""
    return {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": SETOSA, **fields}


def assert_error(response: Any, status: int, fragment: str = "") -> None:
    """V2 のエラー応答であること。"""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert fragment in body["error"], body["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/resnet"),
        ("GET", "/v2/models/resnet/ready"),
        ("GET", "/v2/models/resnet/versions/1"),
        ("GET", f"/v2/models/{MODEL}/versions/2"),
        ("GET", f"/v2/models/{MODEL}/versions/2/ready"),
        ("POST", "/v2/models/resnet/infer"),
        ("POST", "/v2/models/resnet/versions/1/infer"),
        ("POST", f"/v2/models/{MODEL}/versions/0/infer"),
    ],
)
def test_unknown_model_or_version_is_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json=infer_body(SETOSA))
    assert_error(response, 404)


BAD_REQUESTS: list[tuple[str, dict[str, Any] | bytes, str]] = [
    ("invalid-json", b'{"inputs": [', "invalid JSON"),
    ("empty-body", b"", "invalid JSON"),
    ("invalid-utf8", b'{"inputs": [], "x": "\xff"}', "not UTF-8"),
    ("not-object", b"[1, 2, 3]", "invalid inference request"),
    ("no-inputs", {"outputs": []}, "inputs"),
    ("zero-inputs", {"inputs": []}, "one input"),
    ("two-inputs", {"inputs": [tensor(), tensor()]}, "one input"),
    ("no-data", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}, "no data"),
    ("datatype-int32", {"inputs": [tensor(datatype="INT32")]}, "datatype"),
    ("datatype-bytes", {"inputs": [tensor(datatype="BYTES")]}, "datatype"),
    ("datatype-number", {"inputs": [tensor(datatype=32)]}, "datatype"),
    ("shape-1d", {"inputs": [tensor(shape=[4])]}, "shape"),
    ("shape-3d", {"inputs": [tensor(shape=[1, 4, 1])]}, "shape"),
    ("shape-width", {"inputs": [tensor(shape=[1, 3], data=[1.0, 2.0, 3.0])]}, "shape"),
    ("shape-negative", {"inputs": [tensor(shape=[-1, 4])]}, "shape"),
    ("shape-string", {"inputs": [tensor(shape="1,4")]}, "shape"),
    ("length-short", {"inputs": [tensor(data=[1.0, 2.0, 3.0])]}, "3 values"),
    ("length-long", {"inputs": [tensor(data=[*SETOSA, *SETOSA])]}, "8 values"),
    ("rows-vs-shape", {"inputs": [tensor(shape=[2, 4], data=[SETOSA])]}, "needs 8"),
    ("ragged", {"inputs": [tensor(shape=[2, 4], data=[SETOSA, [1.0]])]}, "needs 8"),
    ("too-deep", {"inputs": [tensor(data=[[SETOSA]])]}, "needs 4"),
    ("empty-batch", {"inputs": [tensor(shape=[0, 4], data=[])]}, "at least one row"),
    ("string-value", {"inputs": [tensor(data=["5.1", 3.5, 1.4, 0.2])]}, "'X' expects a number"),
    ("bool-value", {"inputs": [tensor(data=[True, 3.5, 1.4, 0.2])]}, "expects a number; got bool"),
    ("null-value", {"inputs": [tensor(data=[None, 3.5, 1.4, 0.2])]}, "got NoneType"),
    ("float32-overflow", {"inputs": [tensor(data=[1e39, 3.5, 1.4, 0.2])]}, "float32"),
    ("unknown-output", {"inputs": [tensor()], "outputs": [{"name": "logits"}]}, "unknown output"),
    ("duplicate-output", {"inputs": [tensor()], "outputs": [{"name": "label"}] * 2}, "twice"),
    ("binary-flag-type", {"inputs": [tensor()], "parameters": {"binary_data_output": 1}}, "bool"),
    ("id-type", {"id": 7, "inputs": [tensor()]}, "str"),
    ("binary-size-without-header", {"inputs": [tensor(parameters={"binary_data_size": 16})]}, ""),
]


@pytest.mark.parametrize(
    ("body", "fragment"), [pytest.param(b, f, id=i) for i, b, f in BAD_REQUESTS]
)
def test_bad_request_is_400(
    client: TestClient, body: dict[str, Any] | bytes, fragment: str
) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    assert_error(client.post(INFER, content=content, headers=JSON), 400, fragment)


def test_too_many_rows_is_400(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(max_request_rows=2))) as small:
        body = infer_body([SETOSA] * 3, [3, 4])
        assert_error(small.post(INFER, json=body), 400, "too many rows")


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": '
    body += b"[" * 100_000
    assert_error(client.post(INFER, content=body, headers=JSON), 400, "invalid JSON")


def _binary(extra_tensor: dict[str, Any], raw: bytes) -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": [tensor(data=None) | extra_tensor]})
    header = header.replace(b',"data":null', b"")
    return header + raw, len(header)


RAW = bytes(16)
BAD_BINARY: list[tuple[str, dict[str, Any], bytes, str | None, str]] = [
    ("size-vs-body", {"parameters": {"binary_data_size": 16}}, bytes(12), None, "12 bytes"),
    ("size-vs-shape", {"parameters": {"binary_data_size": 12}}, bytes(12), None, "needs 16"),
    (
        "data-and-binary",
        {"data": SETOSA, "parameters": {"binary_data_size": 16}},
        RAW,
        None,
        "both",
    ),
    ("binary-not-declared", {"data": SETOSA}, RAW, None, "binary_data_size"),
    ("size-negative", {"parameters": {"binary_data_size": -1}}, RAW, None, ">= 0"),
    ("header-too-long", {"parameters": {"binary_data_size": 16}}, RAW, "99999", "exceeds"),
    ("header-not-number", {"parameters": {"binary_data_size": 16}}, RAW, "abc", "integer"),
    ("header-cuts-json", {"parameters": {"binary_data_size": 16}}, RAW, "5", "invalid JSON"),
]


@pytest.mark.parametrize(
    ("extra", "raw", "length", "fragment"),
    [pytest.param(e, r, h, f, id=i) for i, e, r, h, f in BAD_BINARY],
)
def test_bad_binary_request_is_400(
    client: TestClient, extra: dict[str, Any], raw: bytes, length: str | None, fragment: str
) -> None:
    content, header_length = _binary(extra, raw)
    headers = {HEADER: length or str(header_length), "content-type": "application/octet-stream"}
    assert_error(client.post(INFER, content=content, headers=headers), 400, fragment)


def test_binary_nan_is_400(client: TestClient) -> None:
    content, length = _binary({"parameters": {"binary_data_size": 16}}, b"\x00\x00\xc0\x7f" * 4)
    response = client.post(INFER, content=content, headers={HEADER: str(length)})
    assert_error(response, 400, "finite")


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "application/json", "content-encoding": "gzip"},
    ],
    ids=["text", "multipart", "gzip"],
)
def test_unsupported_media_is_415(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(INFER, content=orjson.dumps(infer_body(SETOSA)), headers=headers)
    assert_error(response, 415)


@pytest.mark.parametrize(
    "headers", [{}, {"content-type": "application/x-www-form-urlencoded"}], ids=["none", "form"]
)
def test_json_body_without_json_content_type(client: TestClient, headers: dict[str, str]) -> None:
    """Triton・KServe と同じく、ボディが JSON なら Content-Type が無くてもフォームでも推論する。"""
    body = orjson.dumps(infer_body(SETOSA))
    expected = client.post(INFER, content=body, headers=JSON)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == expected.json()


def test_form_body_that_is_not_json_is_415(client: TestClient) -> None:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert_error(client.post(INFER, content=b"inputs=1", headers=headers), 415, "not JSON")


def test_seed_api_still_rejects_octet_stream(client: TestClient) -> None:
    """V2 がバイナリを受け付けても、シード API の 415 規則は変わらない。"""
    response = client.post(
        "/predict",
        content=b'{"data": [[5.1, 3.5, 1.4, 0.2]]}',
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 415


def test_body_over_limit_is_413(make_settings: Any) -> None:
    settings: Settings = make_settings(max_body_bytes=1024)
    with TestClient(create_app(settings)) as small:
        body = orjson.dumps(infer_body([0.5] * 400, [100, 4]))
        assert len(body) > 1024
        assert_error(small.post(INFER, content=body, headers=JSON), 413)


NOT_READY_PATHS = [
    "/v2/health/ready",
    *(
        f"/v2/models/{MODEL}{suffix}"
        for suffix in ("", "/ready", "/versions/1", "/versions/1/ready")
    ),
]


@pytest.mark.parametrize("path", NOT_READY_PATHS)
def test_not_ready_is_503(unready_client: TestClient, path: str) -> None:
    assert_error(unready_client.get(path), 503)


def test_infer_not_ready_is_503(unready_client: TestClient) -> None:
    assert_error(unready_client.post(INFER, json=infer_body(SETOSA)), 503, "not ready")
    assert unready_client.get("/v2/health/live").status_code == 200
    assert unready_client.get("/v2").status_code == 200


def test_unknown_model_beats_not_ready(unready_client: TestClient) -> None:
    assert_error(unready_client.post("/v2/models/resnet/infer", json=infer_body(SETOSA)), 404)


def test_model_fault_is_500_without_details(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = client.app
    assert isinstance(app, ModelServerApp)
    assert app.state.dataplane is not None

    def broken(*_args: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app.state.dataplane.model, "run", broken)
    response = client.post(INFER, json=infer_body(SETOSA))
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error"}


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        ({HEADER: "9" * 5000}, b'{"inputs": []}', "at most 18 digits"),
        (
            {"content-type": "application/json"},
            b'{"inputs": [{"name": "x", "shape": [' + b"9" * 4300 + b', 4], "datatype": "FP32"}]}',
            "invalid inference request",
        ),
    ],
    ids=["header-length-5000-digits", "shape-4300-digits"],
)
def test_huge_integers_are_400_not_500(
    client: TestClient, headers: dict[str, str], body: bytes, fragment: str
) -> None:
    assert_error(client.post(INFER, content=body, headers=headers), 400, fragment)
