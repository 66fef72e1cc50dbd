"""uvloop のイベントループ。ただし待ち受けソケットの accept は自前で、溜まった分をまとめて行う。

uvloop（libuv）の TCP サーバーは過負荷（数百の接続が常に読める状態）で新しい接続をほとんど
accept しなくなり、プローブの接続がカーネルの accept キューで数十秒待たされる
（c=512 で 1 ワーカー：キューが 100 件を超えたまま毎秒数十件しか減らない）。ここでは
待ち受けソケットを add_reader で見張り、読めるたびに最大 ACCEPT_BATCH 件を accept して
connect_accepted_socket で uvloop の TCP トランスポートに渡す（以降の読み書きは uvloop のまま）。

ワーカーが複数のとき、親は SO_REUSEPORT を付けて bind しただけ（listen しない）のソケットを
渡す。ワーカーはそれと同じアドレスに自分の待ち受けソケットを作って加わり（worker_socket）、
新しい接続はカーネルが 4 つ組のハッシュでワーカーに振り分ける。1 つの待ち受けソケットを
共有すると、先に起きたワーカーがキューを丸ごと accept し、64 本の keep-alive 接続が 64 対 0
に偏ることがあった（一度決まった接続はそのワーカーに残る）。
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

logger = logging.getLogger(__name__)

ACCEPT_BATCH = 256
# ファイル記述子が尽きたときなど、accept を休む秒数（その間に既存の接続が閉じる）
ACCEPT_BACKOFF_SECONDS = 0.1
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def reuseport_socket(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    """SO_REUSEPORT を付けて bind したソケット（listen はしない：呼び出し側が決める）。"""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def worker_socket(sock: socket.socket) -> socket.socket:
    """渡されたソケットが SO_REUSEPORT 付きなら、同じアドレスにこのプロセス専用のものを作る。

    それ以外（1 プロセスのとき）は渡されたソケットをそのまま使う。
    """
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return sock
    host, port = sock.getsockname()[:2]
    return reuseport_socket(socket.AddressFamily(sock.family), (host, port))


class Listener(asyncio.AbstractServer):
    """待ち受けソケット 1 つ。読めるたびに溜まった接続をまとめて accept する。"""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: ProtocolFactory,
        backlog: int,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._serving = True
        self._attaching: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        sock.listen(backlog)
        loop.add_reader(sock.fileno(), self._accept_pending)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """待ち受けソケット（uvicorn が起動のログに使う）。"""
        return (self._sock,) if self._serving else ()

    def _accept_pending(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    logger.warning("accept paused for %.1f s: %s", ACCEPT_BACKOFF_SECONDS, exc)
                    self._loop.remove_reader(self._sock.fileno())
                    self._loop.call_later(ACCEPT_BACKOFF_SECONDS, self._resume)
                return
            task = self._loop.create_task(self._attach(conn))
            self._attaching.add(task)
            task.add_done_callback(self._attaching.discard)

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept_pending)

    async def _attach(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # accept の直後に切られた接続

    def close(self) -> None:
        """accept キューに残った接続を受け取ってから、ソケットを閉じる。

        閉じた待ち受けソケットのキューにある接続はカーネルがリセットする（クライアントは
        リクエストを送った後かもしれない）。受け取った接続はドレイン中の接続として応答される。
        """
        if self._serving:
            self._accept_pending()
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def is_serving(self) -> bool:
        """accept しているか。"""
        return self._serving

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """このサーバーのイベントループ。"""
        return self._loop

    async def start_serving(self) -> None:
        """作った時点で accept を始めている。"""

    async def serve_forever(self) -> None:
        """uvicorn は使わない。"""
        raise NotImplementedError

    async def wait_closed(self) -> None:
        """accept 中の接続の受け渡しが終わるまで待つ。"""
        if self._attaching:
            await asyncio.gather(*self._attaching, return_exceptions=True)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


class Loop(uvloop.Loop):
    """待ち受けソケットを渡された create_server だけを Listener で行う uvloop のループ
    （SO_REUSEPORT 付きならワーカー専用のソケットで：worker_socket）。"""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: ProtocolFactory, *args: Any, **kwargs: Any
    ) -> asyncio.AbstractServer:
        """sock= だけが渡され TLS でなければ Listener、それ以外は uvloop のまま。"""
        sock = kwargs.get("sock")
        if args or sock is None or kwargs.get("ssl") is not None:
            server: asyncio.AbstractServer = await super().create_server(
                protocol_factory, *args, **kwargs
            )
            return server
        return Listener(self, worker_socket(sock), protocol_factory, kwargs.get("backlog", 100))
