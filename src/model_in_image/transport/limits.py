"""接続ごとの上限（ConnectionLimits）と、ボディが上限を超えたリクエストの断り方。

ボディの上限（MAX_BODY_BYTES）は受信の途中で数える（transport.framing）：Content-Length が
上限を超えるならヘッダを読んだ時点で、chunked なら大きさの行を読んだ時点で断る。断るのは
アプリ（ルートの形式の 413）：scope["extensions"][BODY_TOO_LARGE] を立ててボディを待つ
アプリを起こし、Request.body が 413 にする。応答には Connection: close を付け、閉じるときは
送信側だけを閉じて、受信は捨てながら短い猶予（LINGER_SECONDS）だけ待つ（ボディを送り終えて
から読むクライアントが、残りのボディへの RST で 413 を受け取り損ねないように）。
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from model_in_image.transport.cycle import flush_responses

MAX_HEADER_BYTES = 64 * 1024
MAX_URL_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
BODY_TOO_LARGE = "model_in_image.body_too_large"
# 断った後に受信を捨てながら待つ秒数（その前にクライアントが閉じれば、そこで閉じる）
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """接続ごとの上限。"""

    request_timeout: float = 30.0
    max_header_bytes: int = MAX_HEADER_BYTES
    max_url_bytes: int = MAX_URL_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


class ServerConfig(uvicorn.Config):
    """uvicorn.Config に接続の上限を加えたもの（ワーカーにもそのまま渡る）。"""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class LingeringTransport(asyncio.Transport):
    """応答の後の close を「送信側を閉じ、猶予の後に閉じる」に替えたトランスポート
    （uvicorn の RequestResponseCycle が使う write・is_closing・close だけを持つ）。"""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """そのまま書く。"""
        self._transport.write(data)

    def is_closing(self) -> bool:
        """元のトランスポートが閉じかけか。"""
        return self._transport.is_closing()

    def close(self) -> None:
        """書いた分を送ってから送信側を閉じ、猶予の後に閉じる（先に相手が閉じればそこで）。"""
        transport = self._transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(LINGER_SECONDS, transport.close)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """元のトランスポートの情報。"""
        return self._transport.get_extra_info(name, default)


def refuse_body(protocol: HttpToolsProtocol, detail: str) -> None:
    """受信中のボディが上限を超えた：以後の受信は捨て、アプリに 413 を返させて閉じる。"""
    cycle = protocol.cycle
    protocol.parser = None  # type: ignore[assignment]
    flush_responses()  # 先に応答し終えた分を、送信側を閉じる前に書く
    if cycle is None:  # 念のため（ボディはヘッダの後にしか来ない）
        protocol.transport.close()
        return
    protocol.logger.debug("refusing a request body: %s", detail)
    extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
    extensions[BODY_TOO_LARGE] = detail
    cycle.keep_alive = False
    cycle.transport = LingeringTransport(protocol.transport, protocol.loop)
    protocol.flow.resume_reading()  # 捨てるために読み続ける
    if cycle.response_complete:  # ボディを読まずに応答し終えていた
        cycle.transport.close()
    elif not cycle.response_started:
        cycle.message_event.set()  # ボディを待つアプリを起こす（Request.body が 413 にする）
