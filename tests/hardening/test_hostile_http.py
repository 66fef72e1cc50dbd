"""敵対的な HTTP（実サーバー）：深い入れ子・巨大なボディ・壊れた文字・不正なメソッドは 4xx。"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from support.net import HOST
from support.samples import JSON, PREDICT_BODY, V2_INFER
from support.servers import LiveServer

MAX_BODY = 1_048_576  # 既定の MAX_BODY_BYTES
DEEP = 100_000
V2_PREFIX = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": '
POST_PATHS = ["/predict", "/predict/label", V2_INFER]


@pytest.fixture(scope="module")
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """実サーバーへのクライアント（127.0.0.1 のみ、時間制限付き）。"""
    with httpx.Client(base_url=live_server.base_url, timeout=10.0, trust_env=False) as client:
        yield client


def assert_4xx(response: httpx.Response, *allowed: int) -> None:
    """4xx の JSON で、サーバーは生きている。"""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if allowed:
        assert response.status_code in allowed, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text


NESTED = {
    "array": b"[" * DEEP,
    "closed-array": b"[" * DEEP + b"]" * DEEP,
    "in-data": b'{"data": ' + b"[" * DEEP,
    "in-unknown-key": b'{"extra": ' + b"[" * DEEP,
    "objects-in-unknown-key": b'{"extra": ' + b'{"a": ' * DEEP,
    "closed-in-unknown-key": b'{"extra": '
    + b"[" * 5000
    + b"]" * 5000
    + b', "data": [[1, 2, 3, 4]]}',
    "v2-data": V2_PREFIX + b"[" * DEEP,
}


@pytest.mark.parametrize("path", POST_PATHS)
@pytest.mark.parametrize("body", NESTED.values(), ids=NESTED.keys())
def test_deeply_nested_json_is_4xx(http: httpx.Client, path: str, body: bytes) -> None:
    assert_4xx(http.post(path, content=body, headers=JSON))


@pytest.mark.parametrize("path", POST_PATHS)
def test_body_over_limit_is_413(http: httpx.Client, path: str) -> None:
    body = b'{"data": [' + b"[5.1, 3.5, 1.4, 0.2], " * (MAX_BODY // 20) + b"[1, 2, 3, 4]]}"
    assert len(body) > MAX_BODY
    assert_4xx(http.post(path, content=body, headers=JSON), 413)


@pytest.mark.parametrize("path", POST_PATHS)
def test_chunked_body_over_limit_is_413(http: httpx.Client, path: str) -> None:
    """Content-Length の無い（chunked）ボディも読みながら上限で止める。"""

    def chunks() -> Iterator[bytes]:
        yield b'{"data": ['
        for _ in range(MAX_BODY // 4096 + 2):
            yield b" " * 4096

    assert_4xx(http.post(path, content=chunks(), headers=JSON), 413)


GARBAGE = {
    # 無視されるキーの中でも UTF-8 でないボディは JSON ではない
    "invalid-utf8": b'{"data": [[5.1, 3.5, 1.4, 0.2]], "x": "\xff\xfe\xfd"}',
    "v2-invalid-utf8": V2_PREFIX + b'[5.1, 3.5, 1.4, 0.2]}], "x": "\xff\xfe\xfd"}',
    "invalid-utf8-value": b'{"data": [[\xff, 3.5, 1.4, 0.2]]}',
    "lone-surrogate": b'{"data": [[5.1, 3.5, 1.4, 0.2]], "x": "\\ud800"}',
    "unicode-numbers": '{"data": [["５.１", "٣.٥", "Ⅰ", "𝟘"]]}'.encode(),
    "unicode-garbage": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u202e\u0000\ufeff ☃ 🙂".encode(),
    "nul-bytes": b"\x00" * 256,
    "utf16": '{"data": [[5.1, 3.5, 1.4, 0.2]]}'.encode("utf-16"),
    "bom": b"\xef\xbb\xbf" + PREDICT_BODY,
    "huge-number": b'{"data": [[1' + b"0" * 5000 + b", 3.5, 1.4, 0.2]]}",
    "huge-exponent": b'{"data": [[1e999999999, 3.5, 1.4, 0.2]]}',
    "long-string": b'{"data": [["' + b"a" * 500_000 + b'", 3.5, 1.4, 0.2]]}',
}


@pytest.mark.parametrize("path", POST_PATHS)
@pytest.mark.parametrize("body", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_4xx(http: httpx.Client, path: str, body: bytes) -> None:
    assert_4xx(http.post(path, content=body, headers=JSON))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/predict"),
        ("PUT", "/predict"),
        ("DELETE", "/predict/label"),
        ("PATCH", "/health"),
        ("POST", "/metadata"),
        ("GET", V2_INFER),
        ("PUT", V2_INFER),
        ("POST", "/v2/models/iris_svc"),
        ("DELETE", "/v2"),
    ],
)
def test_wrong_method_is_405(http: httpx.Client, method: str, path: str) -> None:
    assert_4xx(http.request(method, path), 405)


@pytest.mark.parametrize(
    "path", ["/nope", "/v2/models", "/v2/models/iris_svc/x", "/docs-assets/nope.js"]
)
def test_unknown_path_is_404(http: httpx.Client, path: str) -> None:
    assert_4xx(http.get(path), 404)


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x"])
def test_seed_api_non_json_is_415(http: httpx.Client, content_type: str) -> None:
    response = http.post("/predict", content=PREDICT_BODY, headers={"content-type": content_type})
    assert_4xx(response, 415)


def test_seed_api_form_is_json_only_if_the_body_is(http: httpx.Client) -> None:
    """curl -d の既定（フォーム）：JSON のボディは受け付け、フォームのボディは 415。"""
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert http.post("/predict", content=PREDICT_BODY, headers=form).status_code == 200
    assert_4xx(http.post("/predict", content=b"data=1", headers=form), 415)


RAW_REQUESTS = {
    "garbage-request-line": b"\x00\xff\xfe garbage\r\n\r\n",
    "negative-content-length": b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n{}",
    "length-and-chunked": (
        b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"
    ),
    "bad-chunk-size": (
        b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
    "binary-content-type": (
        b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: \xff\xfe\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ),
}


@pytest.mark.parametrize("request_bytes", RAW_REQUESTS.values(), ids=RAW_REQUESTS.keys())
def test_malformed_http_is_4xx(live_server: LiveServer, request_bytes: bytes) -> None:
    with socket.create_connection((HOST, live_server.port), timeout=5.0) as sock:
        sock.sendall(request_bytes)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    code = int(status_line.split()[1])
    assert 400 <= code < 500, status_line


def test_server_still_healthy_after_abuse(http: httpx.Client, live_server: LiveServer) -> None:
    assert http.get("/readyz").status_code == 200
    assert http.post("/predict/label", content=PREDICT_BODY, headers=JSON).json() == {
        "prediction": "setosa"
    }
    assert "Traceback" not in live_server.log()
