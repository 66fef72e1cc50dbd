"""1 応答を 1 回の書き込みで送る RequestResponseCycle（ステータス行・ヘッダ・ボディをまとめる）。

uvicorn はヘッダとボディを別々に transport.write するので、小さな応答でもシステムコールと
TCP のセグメントが 2 つになる。ここでは http.response.start を受け取っても書かずに持っておき、
最初のボディの書き込みの前に付けて 1 回で書く。ヘッダの検証・Content-Length の確認・
keep-alive・切断の扱いは uvicorn の send のまま（書き込み先を差し替えるだけ）。
ボディを書かない HEAD だけは uvicorn と同じく 2 回に分けて送る。
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


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
