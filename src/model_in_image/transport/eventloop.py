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

閉じるとき（uvicorn の終了処理、ドレインの後）は、まずカーネルに新しいハンドシェイクを
始めさせず（transport.handshakes）、始まっていた分が完了するのを少し待ち、accept キューを
空にしてから閉じる：カーネルが完了させた接続をリセットしない。
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

from model_in_image.transport.connections import CONNECTIONS
from model_in_image.transport.handshakes import HANDSHAKE_SETTLE_SECONDS, refuse_new_handshakes

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
        self._closed = asyncio.Event()
        self._handed: socket.socket | None = None  # 閉じる猶予の間：複製する前のソケット
        self._attaching: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        sock.listen(backlog)
        loop.add_reader(sock.fileno(), self._accept_pending)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """待ち受けソケット（uvicorn が起動のログに使う）。"""
        return (self._sock,) if self._serving else ()

    def _accept_pending(self) -> bool:
        """最大 ACCEPT_BATCH 件を accept する。キューにまだ残っているかもしれなければ True。"""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    logger.warning("accept paused for %.1f s: %s", ACCEPT_BACKOFF_SECONDS, exc)
                    self._loop.remove_reader(self._sock.fileno())
                    self._loop.call_later(ACCEPT_BACKOFF_SECONDS, self._resume)
                return False
            task = self._loop.create_task(self._attach(conn))
            self._attaching.add(task)
            task.add_done_callback(self._attaching.discard)
        return True

    def _resume(self) -> None:
        if not self._closed.is_set():  # 閉じる前の猶予の間も accept する
            self._loop.add_reader(self._sock.fileno(), self._accept_pending)

    async def _attach(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # accept の直後に切られた接続

    def close(self) -> None:
        """新しいハンドシェイクを止め、猶予の後に accept キューを空にしてソケットを閉じる。

        閉じた待ち受けソケットのキューにある接続はカーネルがリセットする（クライアントは
        リクエストを送った後かもしれない）。猶予の間も accept は続け、受け取った接続は
        ドレイン中の接続として Connection: close で応答される。フィルタを付けられなければ
        （Linux 以外）すぐに空にして閉じる。
        """
        if not self._serving:
            return
        self._serving = False
        CONNECTIONS.draining = True  # 猶予の間に受け取る接続も Connection: close で応答する
        if not refuse_new_handshakes(self._sock):
            self._close_socket()
            return
        # 1 プロセスのとき uvicorn は close の直後に渡したソケットを閉じる：猶予の間は複製で待つ
        self._handed, self._sock = (
            self._sock,
            socket.fromfd(
                self._sock.fileno(), self._sock.family, self._sock.type, self._sock.proto
            ),
        )
        self._sock.setblocking(False)
        if self._loop.remove_reader(self._handed.fileno()):  # accept を休んでいなければ
            self._loop.add_reader(self._sock.fileno(), self._accept_pending)
        self._loop.call_later(HANDSHAKE_SETTLE_SECONDS, self._close_socket)

    def _close_socket(self) -> None:
        """accept キューを空にしてから閉じる（キューに残ったものはリセットされるので）。"""
        if self._closed.is_set():
            return
        while self._accept_pending():
            pass
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._handed is not None:
            self._handed.close()  # uvicorn が閉じていなければ（どちらも閉じて待ち受けが終わる）
        self._closed.set()

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
        """ソケットを閉じ、accept した接続の受け渡しが終わるまで待つ。"""
        await self._closed.wait()
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
