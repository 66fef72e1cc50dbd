"""リクエストの受信に時間制限をかける HTTP プロトコル（uvicorn の httptools 実装の拡張）。

uvicorn の keep-alive タイムアウトは応答の後にしか働かないため、ヘッダやボディの途中で
止まったクライアントは接続を持ち続け、SIGTERM での終了も妨げる。ここでは接続直後と
リクエストの開始からリクエスト全体を受け取るまでに期限を設け、ヘッダの大きさも制限する。
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """REQUEST_TIMEOUT_SECONDS 以内にリクエストを受け取れなければ接続を閉じる。"""

    # server.py が設定から与える（ワーカーごとにファクトリが設定し直す）
    request_timeout: float = 30.0

    _deadline: asyncio.TimerHandle | None = None
    _header_bytes: int = 0

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.debug("closing a connection that did not send a request in time")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """接続直後から期限を数える。"""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """期限を解除する。"""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """新しいリクエストの開始で期限を数え直す。"""
        self._header_bytes = 0
        self._arm()
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        """ヘッダの合計が上限を超えたら接続を閉じる。"""
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self.transport.close()
            return
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        """リクエストを受け取り終えたら期限を解除する（以後は keep-alive の期限）。"""
        self._disarm()
        super().on_message_complete()
