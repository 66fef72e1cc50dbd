"""ボディの上限（実サーバー、生のソケット）：chunk の大きさ・その合計・Content-Length が
MAX_BODY_BYTES を超えたら、その行を読んだ時点で 413 と Connection: close。

受信の期限は既定の 30 秒にしておく（修正前は期限まで待たされたので、5 秒の上限で見分けられる）。
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from support.net import HOST
from support.samples import PREDICT_BODY, V2_INFER
from support.servers import LiveServer, running_server

MAX_BODY = 1_048_576  # 既定の MAX_BODY_BYTES
# 実測は数 ms。忙しい 2 コアでも 5 倍以上の余裕
ANSWER_SECONDS = 5.0
READ_SECONDS = 15.0
POST_PATHS = ["/predict", "/predict/label", V2_INFER]
V2_BODY = (
    b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
    b'"data": [5.1, 3.5, 1.4, 0.2]}]}'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """受信の期限が既定（30 秒）のサーバー。"""
    env = {"REQUEST_TIMEOUT_SECONDS": "30"}
    with running_server(tmp_path_factory.mktemp("body-limits"), env) as live:
        yield live


def chunked_head(path: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Connection:
    """生のソケットと、応答を 1 つずつ読むための受信バッファ。"""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=READ_SECONDS)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self, what: str) -> None:
        data = self.sock.recv(65536)
        assert data, f"closed {what}: {self.buffer[:200]!r}"
        self.buffer += data

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """応答を 1 つ読む（Content-Length まで）：(ステータス, ヘッダ, ボディ)。"""
        while b"\r\n\r\n" not in self.buffer:
            self._more("before a response")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more("in the middle of a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        """サーバーが閉じたか（残りを読み捨てて EOF まで。期限内に閉じなければ例外）。"""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            if not data:
                return True

    def refused_at_once(self, path: str) -> float:
        """413・Connection: close・ルートの形式の JSON で、閉じられた。応答までの秒を返す。"""
        start = time.monotonic()
        status, headers, body = self.response()
        seconds = time.monotonic() - start
        assert status == 413, body
        assert headers["connection"] == "close"
        key = "error" if path.startswith("/v2/") else "detail"
        assert "exceeds the limit" in json.loads(body)[key]
        assert self.closed()
        return seconds


def assert_still_serving(server: LiveServer, before: int) -> None:
    """サーバーはまだ応答し、ログにトレースバックが無い。"""
    assert server.is_ready()
    log = server.log()[before:]
    assert "Traceback" not in log
    assert "ERROR" not in log


@pytest.mark.parametrize("path", POST_PATHS)
def test_huge_declared_chunk_is_413_at_once(server: LiveServer, path: str) -> None:
    """ffffffffffffffff を宣言して 20 バイトだけ送る：期限まで待たず、すぐに 413。"""
    before = len(server.log())
    with Connection(server.port) as sock:
        sock.sendall(chunked_head(path) + b"ffffffffffffffff\r\n" + b"x" * 20)
        assert sock.refused_at_once(path) < ANSWER_SECONDS
    assert_still_serving(server, before)


@pytest.mark.parametrize("path", POST_PATHS)
def test_sum_of_chunks_over_limit_is_413_before_the_data(server: LiveServer, path: str) -> None:
    """1 つずつは上限の内でも合計が超える大きさの行で、その chunk のデータを待たずに 413。"""
    before = len(server.log())
    half = MAX_BODY // 2
    with Connection(server.port) as sock:
        sock.sendall(chunked_head(path) + chunk(b" " * half) + chunk(b" " * (half - 1)))
        sock.sendall(b"%x\r\n" % 2)  # 合計 MAX_BODY + 1
        assert sock.refused_at_once(path) < ANSWER_SECONDS
    assert_still_serving(server, before)


def test_chunk_size_split_across_writes_is_counted(server: LiveServer) -> None:
    """大きさの行が TCP の区切りをまたいでも数える（数字の途中で上限を超えた時点で断る）。"""
    with Connection(server.port) as sock:
        sock.sendall(chunked_head("/predict") + b"1")
        for digits in (b"0", b"00", b"000"):  # 0x1000000 = 16 MiB > MAX_BODY
            time.sleep(0.05)
            sock.sendall(digits)
        assert sock.refused_at_once("/predict") < ANSWER_SECONDS


def test_content_length_over_limit_is_413_without_the_body(server: LiveServer) -> None:
    """Content-Length が上限を超えるなら、ボディを送る前に 413 で閉じる。"""
    with Connection(server.port) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        )
        assert sock.refused_at_once("/predict") < ANSWER_SECONDS


def test_client_that_sends_the_whole_body_first_still_reads_413(server: LiveServer) -> None:
    """ボディを全部送ってから読むクライアントにも 413 が届く（RST で失わない）。"""
    body = b" " * (MAX_BODY + 200_000)
    with Connection(server.port) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        sock.refused_at_once("/predict")
    with Connection(server.port) as sock:
        sock.sendall(chunked_head("/predict") + chunk(body[:MAX_BODY]) + chunk(b" ") + b"0\r\n\r\n")
        sock.refused_at_once("/predict")


@pytest.mark.parametrize(
    ("path", "body"), [("/predict", PREDICT_BODY), (V2_INFER, V2_BODY)], ids=["seed", "v2"]
)
def test_chunked_body_under_limit_is_served_and_the_connection_kept(
    server: LiveServer, path: str, body: bytes
) -> None:
    """上限内の chunked（拡張・トレーラ付き、1 バイトずつ送っても）は応答し、接続は続く。"""
    pieces = [body[:5], body[5:17], body[17:]]
    request = (
        chunked_head(path)
        + b"".join(b"%x;name=value\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    )
    with Connection(server.port) as sock:
        for byte in range(len(request)):
            sock.sendall(request[byte : byte + 1])
        status, headers, _ = sock.response()
        assert status == 200
        assert headers.get("connection") != "close"
        sock.sendall(request + b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")  # パイプライン
        assert [sock.response()[0] for _ in range(2)] == [200, 200]


def test_pipelined_requests_are_answered_in_order_before_the_413(server: LiveServer) -> None:
    """先に受け取ったリクエストに応答してから、上限を超えたリクエストに 413（順番どおり）。"""
    with Connection(server.port) as sock:
        sock.sendall(
            b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
            + chunked_head("/predict")
            + chunk(PREDICT_BODY)
            + b"0\r\n\r\n"
            + chunked_head("/predict")
            + b"7fffffff\r\n"
        )
        assert [sock.response()[0] for _ in range(2)] == [200, 200]
        sock.refused_at_once("/predict")


def test_refused_bodies_are_counted_as_413(server: LiveServer) -> None:
    """断ったリクエストはメトリクスとアクセスログに 413 として残る（499 ではない）。"""
    with Connection(server.port) as sock:
        sock.sendall(chunked_head("/predict") + b"ffffffff\r\n")
        sock.refused_at_once("/predict")
    with Connection(server.port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, metrics = sock.response()
    lines = [
        line
        for line in metrics.decode().splitlines()
        if line.startswith("model_in_image_requests_total") and 'route="/predict"' in line
    ]
    assert any('status="413"' in line for line in lines), lines
    assert not any('status="499"' in line for line in lines), lines
