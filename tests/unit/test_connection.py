"""GuardedHttpToolsProtocol：止まった接続の切断とヘッダの上限（同一プロセスの実サーバー）。"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from model_in_image.api.app import create_app
from model_in_image.server import uvicorn_config
from model_in_image.transport.connection import MAX_HEADER_BYTES
from support.apps import SettingsFactory
from support.net import free_port

TIMEOUT = 0.5


@pytest.fixture
def server(make_settings: SettingsFactory) -> Iterator[int]:
    """REQUEST_TIMEOUT_SECONDS=0.5 のサーバーをスレッドで動かし、ポートを返す。"""
    settings = make_settings(port=free_port(), request_timeout_seconds=TIMEOUT)
    config = uvicorn_config(settings, multiprocess=False)
    config.log_config = None
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert instance.started
    yield settings.port
    instance.should_exit = True
    thread.join(timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """サーバーが接続を閉じたら True（応答の有無は問わない）。"""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize(
    "payload",
    [b"", b"POST /predict HTTP/1.1\r\nHost: a\r\n"],
    ids=["idle", "partial-headers"],
)
def test_stalled_connection_is_closed(server: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        if payload:
            sock.sendall(payload)
        start = time.monotonic()
        assert closed_within(sock, TIMEOUT + 3)
        assert time.monotonic() - start >= TIMEOUT - 0.2


def test_complete_request_is_served_and_kept_alive(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_oversized_headers_close_the_connection(server: int) -> None:
    filler = b"X-Filler: " + b"a" * (MAX_HEADER_BYTES + 1) + b"\r\n"
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        try:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n" + filler + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        assert closed_within(sock, 3)


def test_app_is_reachable_through_the_factory(make_settings: SettingsFactory) -> None:
    assert create_app(make_settings()).settings.request_timeout_seconds == 30.0
