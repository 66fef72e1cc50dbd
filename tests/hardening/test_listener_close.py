"""待ち受けを閉じる最後の数ミリ秒に完了した接続も、リセットせずに応答する（eventloop.Listener）。

閉じる直前と直後に新しい接続を張り続け、接続できたもの（カーネルがハンドシェイクを完了
させたもの）はすべて HTTP の応答を受け取ることを 20 回確かめる。接続できなかったもの
（SYN を捨てられて期限切れ、または拒否）はリクエストを送っていないので失っていない。
1 プロセス（uvicorn が渡したソケット）と、2 ワーカー（SO_REUSEPORT のグループに
ワーカーごとの待ち受け、同時に閉じる）の両方。フィルタが無いと 1 プロセスで十数件を失った。
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import pytest

from model_in_image.transport.eventloop import Listener, Loop, reuseport_socket
from model_in_image.transport.handshakes import HANDSHAKE_SETTLE_SECONDS

HOST = "127.0.0.1"
ITERATIONS = 20
CLIENTS = 8
BEFORE_CLOSE = 0.1  # 閉じる前に負荷をかける秒数
AFTER_CLOSE = 0.15  # 閉じた後も接続を試みる秒数
CONNECT_TIMEOUT = 0.3  # SYN を捨てられた接続は再送（1 秒後）を待たずに諦める
READ_TIMEOUT = 5.0
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"


class Answer(asyncio.Protocol):
    """リクエストを受け取ったら 200 を返して閉じる。"""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop の TCPTransport

    def data_received(self, data: bytes) -> None:
        self.transport.write(RESPONSE)
        self.transport.close()


@dataclass
class Results:
    """クライアントの結果と、接続できた時刻。"""

    outcomes: Counter[str] = field(default_factory=Counter)
    connected_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, connected_at: float | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if connected_at is not None:
                self.connected_at.append(connected_at)


def client(port: int, until: float, results: Results) -> None:
    """until まで、接続してリクエストを送り、応答を読むのを繰り返す。"""
    while time.monotonic() < until:
        sock = socket.socket()
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((HOST, port))
        except OSError:
            results.add("not connected")
            sock.close()
            continue
        connected_at = time.monotonic()
        sock.settimeout(READ_TIMEOUT)
        received = b""
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            while chunk := sock.recv(4096):
                received += chunk
        except OSError as exc:
            results.add(f"lost: {type(exc).__name__}", connected_at)
        else:
            results.add("answered" if received == RESPONSE else "lost: no answer", connected_at)
        finally:
            sock.close()


async def one_close(results: Results, workers: int) -> float:
    """負荷の中で待ち受けを閉じ、閉じ始めた時刻を返す。"""
    loop = asyncio.get_running_loop()
    if workers == 1:
        sock = socket.socket()
        sock.bind((HOST, 0))
    else:  # 親が bind しただけのソケット：Listener はそれぞれ自分の待ち受けを作る
        sock = reuseport_socket(socket.AF_INET, (HOST, 0))
    port = sock.getsockname()[1]
    servers = [await loop.create_server(Answer, sock=sock, backlog=128) for _ in range(workers)]
    assert all(isinstance(server, Listener) for server in servers)
    until = time.monotonic() + BEFORE_CLOSE + AFTER_CLOSE
    threads = [threading.Thread(target=client, args=(port, until, results)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    await asyncio.sleep(BEFORE_CLOSE)
    closing_at = time.monotonic()
    for server in servers:
        server.close()
    sock.close()  # uvicorn も close の直後に渡したソケットを閉じる
    for server in servers:
        await server.wait_closed()
    while any(thread.is_alive() for thread in threads):
        await asyncio.sleep(0.01)
    return closing_at


@pytest.mark.parametrize("workers", [1, 2])
def test_connections_completed_around_the_close_are_all_answered(workers: int) -> None:
    results = Results()
    last_instant = 0
    loop = Loop()
    try:
        for _ in range(ITERATIONS):
            closing_at = loop.run_until_complete(one_close(results, workers))
            # 閉じ始める 5 ms 前から閉じ終えるまでに接続できたもの：この試験が狙う瞬間
            window = (closing_at - 0.005, closing_at + HANDSHAKE_SETTLE_SECONDS)
            last_instant += sum(window[0] <= at <= window[1] for at in results.connected_at)
            results.connected_at.clear()
    finally:
        loop.close()
    outcomes = dict(results.outcomes)
    assert not [key for key in outcomes if key.startswith("lost")], outcomes
    assert outcomes["answered"] > 20 * ITERATIONS, outcomes
    assert last_instant > 0, outcomes
