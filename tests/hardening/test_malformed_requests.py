"""パーサが拒むリクエスト・Upgrade（実サーバー、生のソケット）：すぐに応答し、
ログは間隔ごとに 1 行でトレースバックは書かない。"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from support.net import HOST
from support.servers import LiveServer

# 忙しい 2 コアでも 5 倍以上の余裕（実測は 1〜2 ms）
ANSWER_SECONDS = 1.0
READ_SECONDS = 10.0
WS_HEADERS = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)

MALFORMED = {
    "connect": b"CONNECT x:80 HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-empty": b"GET http:// HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-bracket": b"GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n",
    "port-overflow": b"GET http://a:99999/livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "port-text": b"GET http://x:bad/livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "control-bytes": b"\x00\x01 / HTTP/1.1\r\n\r\n",
    "bad-method": b"G@T /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET /livez HTTP/9.9\r\nHost: x\r\n\r\n",
    "space-in-target": b"GET /li vez HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-no-colon": b"GET /livez HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n",
    "header-space-name": b"GET /livez HTTP/1.1\r\nHost: x\r\nA b: c\r\n\r\n",
    "bare-cr": b"GET /livez HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
    "bad-content-length": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
    "two-lengths": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "upgrade-with-body": b"POST /predict HTTP/1.1\r\nHost: x\r\n"
    + WS_HEADERS
    + b"Content-Type: application/json\r\nContent-Length: 24\r\n\r\n"
    + b'{"data": [[1, 2, 3, 4]]}',
    "bad-chunk-size": b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\nzz\r\n",
}


def exchange(port: int, data: bytes) -> tuple[bytes, float]:
    """送って、サーバーが閉じるまで読む：(受け取ったバイト列, 秒)。"""
    with socket.create_connection((HOST, port), timeout=READ_SECONDS) as sock:
        start = time.monotonic()
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - start


def new_log(server: LiveServer, before: int) -> str:
    time.sleep(0.2)  # ログの書き込みを待つ
    return server.log()[before:]


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_is_400_and_closed(live_server: LiveServer, request_bytes: bytes) -> None:
    before = len(live_server.log())
    received, seconds = exchange(live_server.port, request_bytes)
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert received.startswith(b"HTTP/1.1 400 "), received[:200]
    assert b"connection: close" in head
    assert b"content-type: application/json" in head
    assert seconds < ANSWER_SECONDS
    log = new_log(live_server, before)
    assert "Traceback" not in log
    assert "Fatal error" not in log
    assert log.count("WARNING") <= 1


def test_malformed_flood_writes_at_most_one_line_per_interval(tmp_path: Path) -> None:
    from support.servers import running_server

    with running_server(tmp_path) as server:
        before = len(server.log())
        for request_bytes in list(MALFORMED.values()) * 20:
            received, _ = exchange(server.port, request_bytes)
            assert received.startswith(b"HTTP/1.1 400 ")
        log = new_log(server, before)
    assert "Traceback" not in log
    assert log.count("malformed request answered 400") <= 2  # 間隔は 10 秒


UPGRADES = {
    "websocket-get": b"GET /livez HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS + b"\r\n",
    "h2c": b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    "websocket-then-bytes": b"GET /livez HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS + b"\r\n\x81\x85ab",
}


@pytest.mark.parametrize("request_bytes", UPGRADES.values(), ids=UPGRADES.keys())
def test_upgrade_is_ignored_answered_and_closed(
    live_server: LiveServer, request_bytes: bytes
) -> None:
    """Upgrade には応じず、ふつうに応答して閉じる（WebSocket のライブラリの有無によらない）。"""
    before = len(live_server.log())
    received, seconds = exchange(live_server.port, request_bytes)
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    assert b"connection: close" in head
    assert seconds < ANSWER_SECONDS
    log = new_log(live_server, before)
    assert "WARNING" not in log
    assert "Traceback" not in log


CHUNKED_HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
CHUNK_LIES = {
    "declared-2^64": b"ffffffffffffffff\r\n" + b"a" * 20,
    "declared-over-limit": b"100001\r\n" + b"a" * 20,
    "sum-over-limit": (b"80000\r\n" + b" " * 0x80000 + b"\r\n") * 2 + b"1\r\n",
    "size-with-extension": b"200000;x=y\r\n" + b"a" * 20,
}


@pytest.mark.parametrize("body", CHUNK_LIES.values(), ids=CHUNK_LIES.keys())
def test_chunk_size_over_limit_is_413_at_once(live_server: LiveServer, body: bytes) -> None:
    """大きさの行（またはその合計）が MAX_BODY_BYTES を超えたら、データを待たずに 413。"""
    received, seconds = exchange(live_server.port, CHUNKED_HEAD + body)
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert b"connection: close" in received.lower()
    assert seconds < ANSWER_SECONDS


def test_chunked_body_within_limit_is_served(live_server: LiveServer) -> None:
    """正しい chunked のボディ（拡張・パイプラインの次のリクエストも）はふつうに応答する。"""
    body = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
    chunked = (
        b"5;ext=1\r\n" + body[:5] + b"\r\n%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n"
    )
    closing = b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    received, seconds = exchange(live_server.port, CHUNKED_HEAD + chunked + closing)
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    assert received.count(b"HTTP/1.1 200 ") == 2
    assert seconds < ANSWER_SECONDS
