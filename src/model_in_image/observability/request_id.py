"""リクエスト ID と W3C traceparent、処理中のリクエストの文脈（ContextVar）とログへの付与。

X-Request-ID は表示可能な ASCII（空白なし）で 128 文字までなら受け取り、そうでなければ作り直す。
ID は応答のヘッダに必ず付け、そのリクエストの処理中に出たログの各行にも付ける。
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from starlette.types import Message, Send

REQUEST_ID_HEADER = b"x-request-id"
TRACEPARENT_HEADER = b"traceparent"
TRACESTATE_HEADER = b"tracestate"
MAX_REQUEST_ID_LENGTH = 128

_VALID_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_REQUEST_ID_LENGTH)
# version-trace_id-parent_id-flags（版 00 は 4 項目だけ、将来の版は後ろに項目が続いてよい）
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[!-~]*)?")
_INVALID_TRACE_ID = b"0" * 32
_INVALID_SPAN_ID = b"0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """W3C Trace Context の traceparent（16 進の小文字）。"""

    trace_id: str
    span_id: str
    flags: int

    @property
    def header(self) -> str:
        """版 00 の traceparent ヘッダの値。"""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def parse_traceparent(value: bytes) -> TraceParent | None:
    """traceparent を解析する（W3C の規則に合わなければ None：新しいトレースとして扱う）。"""
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == b"ff" or (version == b"00" and rest):
        return None
    if trace_id == _INVALID_TRACE_ID or span_id == _INVALID_SPAN_ID:
        return None
    return TraceParent(trace_id.decode(), span_id.decode(), int(flags, 16))


def accept_request_id(value: bytes) -> bool:
    """受け取った X-Request-ID をそのまま使ってよいか（表示可能な ASCII、長さの上限内）。"""
    return _VALID_REQUEST_ID.fullmatch(value) is not None


class RequestIds:
    """ID を作る：プロセスごとの乱数 16 桁 + 連番 16 桁（32 桁の 16 進）。

    uuid4 は 1 件ごとに乱数を読む（約 1.5 µs）。乱数はプロセスの開始時に 1 回だけでよい。
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        """新しい ID。"""
        return f"{self._prefix}{self._next():016x}"


class Exchange:
    """処理中のリクエスト 1 件：ID・トレースの文脈・送った応答（send を包んで ID を付ける）。"""

    __slots__ = (
        "_send",
        "header",
        "parent",
        "request_id",
        "rows",
        "scope",
        "sent",
        "span",
        "status",
        "token",
        "trace_id",
    )

    def __init__(
        self, scope: Any, send: Send, request_id: str, header: bytes, parent: TraceParent | None
    ) -> None:
        self.scope = scope
        self._send = send
        self.request_id = request_id
        self.header = header
        self.parent = parent
        self.trace_id = parent.trace_id if parent is not None else None
        self.status: int | None = None
        self.sent = 0
        self.rows = 0
        self.span: Any = None
        self.token: Token[Exchange | None] | None = None

    @property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """応答に付けるヘッダ（X-Request-ID）。"""
        return ((REQUEST_ID_HEADER, self.header),)

    async def send(self, message: Message) -> None:
        """応答の開始に X-Request-ID を足し、ステータスと本文の大きさを記録して送る。"""
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, self.header)]
        elif kind == "http.response.body":
            self.sent += len(message.get("body", b""))
        await self._send(message)


# 処理中のリクエスト（ログのフィルタ・予測のリスナーが読む）
CURRENT: ContextVar[Exchange | None] = ContextVar("model_in_image_request", default=None)


def current_request_id() -> str | None:
    """処理中のリクエストの ID（リクエストの外では None）。"""
    exchange = CURRENT.get()
    return None if exchange is None else exchange.request_id


class RequestIdFilter(logging.Filter):
    """処理中のリクエストの ID をログレコードに付ける。

    JSON では request_id 属性（リクエストの外では付けない）、TEXT では書式の %(request_tag)s に
    入る「 [request_id=...]」（リクエストの外では空）。
    """

    def __init__(self, text: bool = False) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        """レコードに ID を付ける（捨てるレコードは無い）。"""
        request_id = current_request_id()
        if self.text:
            record.request_tag = "" if request_id is None else f" [request_id={request_id}]"
        elif request_id is not None:
            record.request_id = request_id
        return True
