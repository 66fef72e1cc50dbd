"""遅い・止まったクライアント：他のクライアントは待たされず、止まった接続はタイムアウトで閉じる。

uvicorn（httptools でも h11 でも）の timeout_keep_alive は「応答を送り終えた後」にだけ
働く。最初のリクエストを送らない接続・ヘッダやボディの途中で止まった接続は、
REQUEST_TIMEOUT_SECONDS（protocol.BoundedHttpToolsProtocol）で閉じる。
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.net import HOST
from support.samples import PREDICT_BODY
from support.servers import LiveServer, start_server

KEEP_ALIVE = 2.0  # conftest の TIMEOUT_KEEP_ALIVE と REQUEST_TIMEOUT_SECONDS
GRACE = 3.0
STALLED = {
    "idle": b"",
    "partial-headers": b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n",
    "partial-body": (
        b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + PREDICT_BODY[:10]
    ),
}


def connect(port: int, payload: bytes) -> socket.socket:
    """送って止まる接続。"""
    sock = socket.create_connection((HOST, port), timeout=5.0)
    if payload:
        sock.sendall(payload)
    return sock


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """期限までにサーバーが接続を閉じたか（応答が来ても読み捨てて待つ）。"""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    sock.settimeout(0.1)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture(scope="module")
def stalled(live_server: LiveServer) -> Iterator[dict[str, tuple[socket.socket, float]]]:
    """止まった接続（種類ごとに 1 本、開いた時刻つき）。モジュールの最後に閉じる。"""
    sockets = {
        name: (connect(live_server.port, data), time.monotonic()) for name, data in STALLED.items()
    }
    yield sockets
    for sock, _ in sockets.values():
        sock.close()


def test_stalled_connections_do_not_block_other_clients(
    live_server: LiveServer, stalled: dict[str, tuple[socket.socket, float]]
) -> None:
    extra = [connect(live_server.port, data) for data in STALLED.values() for _ in range(10)]
    try:
        with httpx.Client(base_url=live_server.base_url, timeout=2.0, trust_env=False) as client:
            start = time.monotonic()
            for _ in range(50):
                response = client.post(
                    "/predict/label",
                    content=PREDICT_BODY,
                    headers={"content-type": "application/json"},
                )
                assert response.json() == {"prediction": "setosa"}
            # 1 件ごとの遅れは httpx の期限（2 秒）で落ちる。全体は目標 5 秒の 5 倍の余裕
            assert time.monotonic() - start < 25.0
    finally:
        for sock in extra:
            sock.close()
    assert len(stalled) == len(STALLED)


def test_idle_keep_alive_connection_is_closed_after_timeout(live_server: LiveServer) -> None:
    sock = connect(live_server.port, b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
    with sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert closed_by_server(sock, start + KEEP_ALIVE + GRACE)
        assert time.monotonic() - start >= KEEP_ALIVE - 0.5


@pytest.mark.parametrize("kind", STALLED)
def test_stalled_request_is_closed_after_timeout(
    stalled: dict[str, tuple[socket.socket, float]], kind: str
) -> None:
    sock, opened = stalled[kind]
    assert closed_by_server(sock, opened + KEEP_ALIVE + GRACE)


def test_stalled_upload_does_not_block_shutdown(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"REQUEST_TIMEOUT_SECONDS": str(KEEP_ALIVE)})
    try:
        sock = connect(server.port, STALLED["partial-body"])
        with sock:
            time.sleep(0.2)
            server.terminate()
            try:
                code = server.wait(KEEP_ALIVE + 2 * GRACE)
            except subprocess.TimeoutExpired:
                code = None
        assert code == 0, "server did not exit after SIGTERM while a client stalled mid-body"
    finally:
        server.stop()
