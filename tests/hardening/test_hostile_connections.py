"""1 つの悪いクライアントで Pod を倒させない：応答を読まないパイプライン、少しずつ送る巨大な
ヘッダ・URL、Host の無い・重複したリクエスト（127.0.0.1 の実サーバー、時間は有界）。"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.net import HOST, get_status, rss_kb
from support.samples import PREDICT_BODY
from support.servers import LiveServer, running_server

MIB = 1024
RSS_GROWTH_LIMIT_KB = 20 * MIB
PIPELINE_SECONDS = 4.0
STREAM_BYTES = 64 * 1024 * 1024
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(PREDICT_BODY), PREDICT_BODY)
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """このテストだけの実サーバー（RSS を他のテストの影響なしに測る）。"""
    with running_server(tmp_path) as live:
        yield live


def pipeline_without_reading(port: int, clients: int, seconds: float) -> int:
    """clients 本の接続でリクエストを送り続け、応答は読まない。送れたバイト数を返す。"""
    socks = [socket.create_connection((HOST, port)) for _ in range(clients)]
    chunk = memoryview(REQUEST * 1000)
    offsets = [0] * clients
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        for sock in socks:
            sock.setblocking(False)
        while time.monotonic() < deadline:
            progressed = False
            for i, sock in enumerate(socks):
                try:
                    n = sock.send(chunk[offsets[i] :])
                except BlockingIOError:
                    continue
                sent += n
                offsets[i] = (offsets[i] + n) % len(chunk)
                progressed = True
            if not progressed:
                time.sleep(0.005)
    finally:
        for sock in socks:
            sock.close()
    return sent


@pytest.mark.parametrize("clients", [1, 3])
def test_pipelining_without_reading_keeps_memory_bounded(server: LiveServer, clients: int) -> None:
    before = rss_kb(server.pid)
    sent = pipeline_without_reading(server.port, clients, PIPELINE_SECONDS)
    growth = rss_kb(server.pid) - before
    assert sent > 1024 * 1024  # サーバーは読んで応答していた（最初から止めていたのではない）
    assert growth <= RSS_GROWTH_LIMIT_KB, f"RSS grew {growth} KiB after {sent} bytes"
    assert get_status(server.port, "/health") == 200


def stream_slowly(port: int, start: bytes) -> tuple[bytes, int]:
    """start の後に 64 KiB ずつ 64 MiB まで送る。サーバーの応答と送れたバイト数を返す。"""
    sent = 0
    with socket.create_connection((HOST, port), timeout=5.0) as sock:
        sock.sendall(start)
        try:
            while sent < STREAM_BYTES:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return sock.recv(4096), sent
        except ConnectionResetError:
            return b"", sent


@pytest.mark.parametrize(
    ("start", "status"),
    [
        (b"GET /livez HTTP/1.1\r\nHost: a\r\nX-Filler: ", b"431"),
        (b"GET /livez?", b"414"),
        (b"GET /livez HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 20000, b"431"),
    ],
    ids=["one-header", "url", "many-headers"],
)
def test_oversized_head_is_refused_while_receiving(
    server: LiveServer, start: bytes, status: bytes
) -> None:
    before = rss_kb(server.pid)
    response, sent = stream_slowly(server.port, start)
    assert response.split(b"\r\n", 1)[0].split()[1] == status, response[:200]
    assert b"connection: close" in response
    assert sent < 8 * 1024 * 1024  # 途中で閉じられた（64 MiB を受け取り続けない）
    assert rss_kb(server.pid) - before <= RSS_GROWTH_LIMIT_KB
    assert get_status(server.port, "/health") == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /livez HTTP/1.1\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
    ids=["no-host", "two-hosts"],
)
def test_http11_needs_exactly_one_host(server: LiveServer, request_bytes: bytes) -> None:
    with socket.create_connection((HOST, server.port), timeout=5.0) as sock:
        sock.sendall(request_bytes)
        response = sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 400 "), response
    assert b"Host" in response


def test_http10_without_host_is_served(server: LiveServer) -> None:
    with socket.create_connection((HOST, server.port), timeout=5.0) as sock:
        sock.sendall(b"GET /livez HTTP/1.0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_pipelined_requests_are_all_answered_in_order(server: LiveServer) -> None:
    count = 3000
    payload = REQUEST * count + b"GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    received = b""
    with socket.create_connection((HOST, server.port), timeout=10.0) as sock:
        # 送る間も読む（読まずに送り続けると、サーバーは正しく読み込みを止めて互いに待つ）
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        while chunk := sock.recv(1 << 20):
            received += chunk
        sender.join(timeout=10)
    assert received.count(b"HTTP/1.1 200 OK") == count + 1
    assert received.endswith(b'{"status":"alive"}')
