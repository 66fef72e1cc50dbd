"""HTTP 接続の保護：遅い・止まったクライアントと大きすぎるヘッダ（uvicorn の httptools の拡張）。

uvicorn の keep-alive タイムアウトは応答の後にしか働かないため、ヘッダやボディの途中で
止まったクライアントは接続を持ち続け、SIGTERM での終了も妨げる。ここでは接続直後と
リクエストの開始からリクエスト全体を受け取るまでに期限を設け、ヘッダの大きさも制限する。
設定は uvicorn と同じく config（ServerConfig）から各接続に届く。
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState as UvicornServerState

MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """接続ごとの上限。"""

    request_timeout: float = 30.0
    max_header_bytes: int = MAX_HEADER_BYTES


class ServerConfig(uvicorn.Config):
    """uvicorn.Config に接続の上限を加えたもの（ワーカーにもそのまま渡る）。"""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """REQUEST_TIMEOUT_SECONDS 以内にリクエストを受け取れない接続と、大きすぎるヘッダを閉じる。"""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: UvicornServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits if isinstance(config, ServerConfig) else ConnectionLimits()
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._expire)

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
        if self._header_bytes > self.limits.max_header_bytes:
            self.transport.close()
            return
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        """リクエストを受け取り終えたら期限を解除する（以後は keep-alive の期限）。"""
        self._disarm()
        super().on_message_complete()
