"""1 応答を 1 回の書き込みで送る RequestResponseCycle（ステータス行・ヘッダ・ボディをまとめる）。

uvicorn はヘッダとボディを別々に transport.write するので、小さな応答でもシステムコールと
TCP のセグメントが 2 つになる。ここでは http.response.start を受け取っても書かずに持っておき、
最初のボディの書き込みの前に付けて 1 回で書く。ヘッダの検証・Content-Length の確認・
keep-alive・切断の扱いは uvicorn の send のまま（書き込み先を差し替えるだけ）。
ボディを書かない HEAD だけは uvicorn と同じく 2 回に分けて送る。

ディスパッチャが組み立てた応答は respond で ASGI のメッセージを作らずに送る：ステータス行・
既定のヘッダ（秒ごとに替わる date など。バイト列にしたものを使い回す）・応答のヘッダ・
Content-Length を 1 回で書く。値の検証は uvicorn と同じ規則を全部の値に 1 回の検索で。
ディスパッチャは受け取った send がこのサイクルのものなら respond を使う（scope に入れて渡すと
scope → respond → サイクル → scope の循環参照になり、リクエストごとに GC の回収を待つ）。

ほかにも処理中のリクエストがあれば、respond の書き込みはその周回の終わりにまとめて行う
（OUTBOX）：同じ周回のハンドラを先に続けて実行し、書き込み（ループバックでは相手の受信の
処理までこのスレッドが行う）をその後に続けて行う。交互に行うより CPU のキャッシュに載ったまま
進み、c=64 で 1 リクエストの CPU 時間が約 4 割減った（docs/benchmarks.md）。接続を閉じる経路は
閉じる前に flush_responses() で書き出す（応答を失わない・順序を変えない）。
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

from model_in_image.transport.connections import CONNECTIONS

Headers = Sequence[tuple[bytes, bytes]]


class _DefaultHeaders:
    """uvicorn の既定のヘッダ（リスト）をバイト列にしたもの。リストが替わったら作り直す。"""

    __slots__ = ("encoded", "source")

    def __init__(self) -> None:
        self.source: list[tuple[bytes, bytes]] | None = None
        self.encoded = b""

    def of(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not self.source:
            self.encoded = b"".join(b"%s: %s\r\n" % pair for pair in headers)
            self.source = headers
        return self.encoded


_DEFAULTS = _DefaultHeaders()


class _Outbox(threading.local):
    """この周回の終わりに書く応答（トランスポート, バイト列, 書いた後に閉じるか）。

    スレッドごと（＝イベントループごと：テストは 1 つのプロセスで複数のサーバーを動かす）。
    """

    def __init__(self) -> None:
        self.items: list[tuple[asyncio.Transport, bytes, bool]] = []

    def put(self, transport: asyncio.Transport, data: bytes, close: bool) -> None:
        if not self.items:  # この周回の最初の 1 件：書き出しを予約する
            asyncio.get_running_loop().call_soon(self.flush)
        self.items.append((transport, data, close))

    def flush(self) -> None:
        """溜めた応答を順に書く（閉じかけの接続の分は捨てる：相手がもういない）。"""
        while self.items:
            items, self.items = self.items, []
            for transport, data, close in items:
                if not transport.is_closing():
                    transport.write(data)
                    if close:
                        transport.close()


OUTBOX = _Outbox()


def flush_responses() -> None:
    """溜めた応答を今すぐ書く（接続を閉じる・直接書く前に呼ぶ）。"""
    if OUTBOX.items:
        OUTBOX.flush()


class _Collect:
    """書き込みを貯めるだけの transport（ヘッダを組み立てる間だけ使う）。"""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


class _Prefixed:
    """最初の write に貯めたヘッダを前に付ける transport（ほかはそのまま本物へ）。"""

    __slots__ = ("_head", "_real")

    def __init__(self, real: asyncio.Transport, head: bytes) -> None:
        self._real = real
        self._head = head

    def write(self, data: bytes) -> None:
        head, self._head = self._head, b""
        self._real.write(head + data if head else data)

    def close(self) -> None:
        if self._head:  # ボディを書かずに閉じる場合もヘッダは送る
            self.write(b"")
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class CoalescingCycle(RequestResponseCycle):
    """ヘッダを最初のボディと 1 回で書く（既存のサイクルの __class__ を差し替えて使う）。"""

    _pending: ASGISendEvent | None = None

    async def send(self, message: ASGISendEvent) -> None:
        """http.response.start は持っておき、最初のボディと一緒に送る（HEAD は uvicorn のまま）。"""
        if (
            message["type"] == "http.response.start"
            and not self.response_started
            and self.scope["method"] != "HEAD"
        ):
            # まだ何も書いていない：2 つ目の start（アプリの誤りの後の 500 など）は前のものに替わる
            self._pending = message
            return
        pending = self._pending
        if pending is None:
            await super().send(message)
            return
        self._pending = None
        real = self.transport
        collect = _Collect()
        self.transport = collect  # type: ignore[assignment]
        try:
            await super().send(pending)
        finally:
            self.transport = real
        if message["type"] != "http.response.body" or not collect.parts:
            # 切断済み・順序違いなど：uvicorn の扱いに任せる（ヘッダは書いたものだけ送る）
            for part in collect.parts:
                real.write(part)
            await super().send(message)
            return
        self.transport = _Prefixed(real, b"".join(collect.parts))  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            prefixed = self.transport
            self.transport = real
            if isinstance(prefixed, _Prefixed) and prefixed._head:  # 書かれずに終わった
                prefixed.write(b"")

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """応答全体を 1 回で書く（headers に Content-Length・Connection・Transfer-Encoding は
        含めない：Content-Length は len(body)、keep-alive でなければ Connection: close を付ける）。

        HEAD・uvicorn のアクセスログ・もう始まった応答は uvicorn の send の手順で送る。
        """
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if (
            self.response_started
            or self._pending is not None
            or self.access_log
            or (self.scope["method"] == "HEAD")
        ):
            length = (b"content-length", b"%d" % len(body))
            start = {"type": "http.response.start", "status": status, "headers": [*headers, length]}
            await self.send(start)  # type: ignore[arg-type]
            await self.send({"type": "http.response.body", "body": body})
            return
        if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        self.response_started = True
        self.waiting_for_100_continue = False
        parts = [STATUS_LINE[status], _DEFAULTS.of(self.default_headers)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        if CONNECTIONS.in_flight > 1:  # ほかのハンドラが続く：周回の終わりにまとめて書く
            OUTBOX.put(self.transport, b"".join(parts), not self.keep_alive)
        else:
            self.transport.write(b"".join(parts))
            if not self.keep_alive:
                self.transport.close()
        self.chunked_encoding = False
        self.expected_content_length = 0
        self.response_complete = True
        self.message_event.set()
        self.on_response()
