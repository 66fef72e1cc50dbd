"""eventloop.Listener：溜まった接続をまとめて accept し、閉じる前にキューに残った接続も受け取る。"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any, ClassVar

import pytest

from model_in_image.transport import eventloop
from model_in_image.transport.eventloop import Listener, Loop


class Recorder(asyncio.Protocol):
    """接続を数えるだけのプロトコル。"""

    made: ClassVar[list[Recorder]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """接続を記録する。"""
        Recorder.made.append(self)
        self.transport = transport


def run(coro: Any) -> Any:
    """このモジュールのループ（uvloop の派生）で実行する。"""
    loop = Loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        for protocol in Recorder.made:
            protocol.transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()


def listening_socket() -> socket.socket:
    """127.0.0.1 の空きポートに bind したソケット（listen は Listener が行う）。"""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def connect(port: int, count: int) -> list[socket.socket]:
    """count 本の接続（カーネルの accept キューに入る）。"""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


@pytest.fixture(autouse=True)
def _clear() -> None:
    Recorder.made.clear()


def test_accepts_every_queued_connection_at_once() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Recorder, sock=listening_socket(), backlog=128)
        assert isinstance(server, Listener)
        assert server.is_serving()
        assert server.get_loop() is loop
        clients = connect(server.sockets[0].getsockname()[1], 50)
        for _ in range(20):
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        for client in clients:
            client.close()
        assert server.sockets == ()
        return len(Recorder.made)

    assert run(scenario()) == 50


def test_close_accepts_what_is_still_queued() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        async with await loop.create_server(Recorder, sock=listening_socket()) as server:
            loop.remove_reader(server.sockets[0].fileno())  # 読めても accept しない状態
            clients = connect(server.sockets[0].getsockname()[1], 5)
            await asyncio.sleep(0.05)
            assert Recorder.made == []
        await asyncio.sleep(0.05)
        for client in clients:
            client.close()
        return len(Recorder.made)

    assert run(scenario()) == 5


class OutOfDescriptors(socket.socket):
    """最初の accept だけ EMFILE で失敗する待ち受けソケット。"""

    failures = 1

    def accept(self) -> tuple[socket.socket, Any]:
        """1 回目は EMFILE、以後は本物の accept。"""
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_running_out_of_descriptors_pauses_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop, "ACCEPT_BACKOFF_SECONDS", 0.05)

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        sock = OutOfDescriptors()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(Recorder, sock=sock)
        clients = connect(sock.getsockname()[1], 3)
        for _ in range(30):
            await asyncio.sleep(0.01)
        assert sock.failures == 0
        server.close()
        await server.wait_closed()
        for client in clients:
            client.close()
        return len(Recorder.made)

    assert run(scenario()) == 3


def test_other_servers_are_uvloops() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Recorder, host="127.0.0.1", port=0)
        assert not isinstance(server, Listener)
        server.close()
        await server.wait_closed()

    run(scenario())


def test_serve_forever_is_not_used() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Recorder, sock=listening_socket())
        await server.start_serving()
        with pytest.raises(NotImplementedError):
            await server.serve_forever()
        server.close()
        await server.wait_closed()  # 閉じるのは猶予（HANDSHAKE_SETTLE_SECONDS）の後

    run(scenario())
