"""ワーカーごとの待ち受けソケット（SO_REUSEPORT）：親は bind だけ、ワーカーは同じアドレスに
自分のソケットを作って加わり、接続はカーネルが振り分ける。1 プロセスでは何も変わらない。"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from model_in_image.server import shared_port
from model_in_image.transport.eventloop import Loop, reuseport_socket, worker_socket
from support.apps import SettingsFactory
from support.net import HOST, free_port

REUSEPORT = (socket.SOL_SOCKET, socket.SO_REUSEPORT)


@pytest.fixture
def parent() -> Iterator[socket.socket]:
    """親の持つ、SO_REUSEPORT で bind しただけのソケット。"""
    sock = reuseport_socket(socket.AF_INET, (HOST, 0))
    yield sock
    sock.close()


def test_a_plain_socket_is_used_as_it_is() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        assert worker_socket(sock) is sock


def test_a_reuseport_socket_gives_each_worker_its_own(parent: socket.socket) -> None:
    first, second = worker_socket(parent), worker_socket(parent)
    try:
        assert len({first.fileno(), second.fileno(), parent.fileno()}) == 3
        assert first.getsockname() == second.getsockname() == parent.getsockname()
        assert first.getsockopt(*REUSEPORT) == second.getsockopt(*REUSEPORT) == 1
    finally:
        first.close()
        second.close()


def test_connections_go_to_the_workers_and_never_to_the_parent(parent: socket.socket) -> None:
    """64 本の接続：どれも 2 つの待ち受けソケットのどちらかのキューに入り、両方に入る。"""
    port = parent.getsockname()[1]
    listeners = [worker_socket(parent) for _ in range(2)]
    clients: list[socket.socket] = []
    try:
        for sock in listeners:
            sock.listen(128)
            sock.setblocking(False)
        clients = [socket.create_connection((HOST, port), timeout=5) for _ in range(64)]
        counts = [len(_accept_all(sock)) for sock in listeners]
    finally:
        for sock in (*listeners, *clients):
            sock.close()
    assert sum(counts) == 64
    assert min(counts) > 0  # 2 項分布で片方が 0 になる確率は 2 × 2^-64


def _accept_all(sock: socket.socket) -> list[socket.socket]:
    accepted = []
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return accepted
        accepted.append(conn)
        conn.close()


def test_shared_port_binds_without_listening(make_settings: SettingsFactory) -> None:
    settings = make_settings(host=HOST, port=free_port(), workers=2)
    sock = shared_port(settings)
    try:
        assert sock.getsockname() == (HOST, settings.port)
        assert sock.getsockopt(*REUSEPORT) == 1
        assert sock.get_inheritable()
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        sock.close()


def test_shared_port_fails_on_a_port_held_without_reuseport(
    make_settings: SettingsFactory,
) -> None:
    with socket.socket() as other:
        other.bind((HOST, 0))
        other.listen(1)
        settings = make_settings(host=HOST, port=other.getsockname()[1], workers=2)
        with pytest.raises(OSError, match="in use"):
            shared_port(settings)


def test_the_loop_listens_on_its_own_socket_and_leaves_the_parents_alone(
    parent: socket.socket,
) -> None:
    """uvicorn が渡す親のソケットで create_server：Listener はワーカー専用のソケットで待ち受け、
    閉じても親のソケットは開いたまま（listen もしない）。"""

    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, sock=parent, backlog=16)
        (own,) = server.sockets
        separate = own is not parent and own.getsockname() == parent.getsockname()
        listening = bool(own.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        server.close()
        await server.wait_closed()
        return separate, listening

    loop = Loop()
    try:
        assert loop.run_until_complete(scenario()) == (True, True)
    finally:
        loop.close()
    assert parent.fileno() >= 0
    assert not parent.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
