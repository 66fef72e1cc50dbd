"""1 リクエストの始まりと終わり：ID・ログの文脈・スパン・アクセスログ（ディスパッチャが呼ぶ）。"""

from __future__ import annotations

from typing import Any

from starlette.types import Send

from model_in_image.observability.access_log import AccessLog
from model_in_image.observability.request_id import (
    CURRENT,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    Exchange,
    RequestIds,
    accept_request_id,
    parse_traceparent,
)
from model_in_image.observability.tracing import Tracing


class RequestTelemetry:
    """リクエストごとの観測。access_log と tracing は無ければ None（None の確認だけで済む）。"""

    def __init__(self, access_log: AccessLog | None = None) -> None:
        self.access_log = access_log
        self.tracing: Tracing | None = None
        self._new_id = RequestIds()

    def begin(self, scope: Any, send: Send) -> Exchange:
        """ヘッダから ID と traceparent を読み（無い・不正なら作る）、文脈に置く。"""
        given = traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                given = value
            elif name == TRACEPARENT_HEADER:
                traceparent = value
            elif name == TRACESTATE_HEADER:
                tracestate = value
        if given is not None and accept_request_id(given):
            request_id, header = given.decode("ascii"), given
        else:
            request_id = self._new_id()
            header = request_id.encode("ascii")
        parent = parse_traceparent(traceparent) if traceparent is not None else None
        exchange = Exchange(scope, send, request_id, header, parent)
        if self.tracing is not None:
            self.tracing.start(exchange, tracestate)
        exchange.token = CURRENT.set(exchange)
        return exchange

    def finish(self, exchange: Exchange, route: str, status: int, seconds: float) -> None:
        """スパンを閉じ、アクセスログを書き、文脈を戻す。ステータスは実際に送ったもの。"""
        if exchange.status is not None:
            status = exchange.status
        if self.tracing is not None:
            self.tracing.end(exchange, route, status)
        if self.access_log is not None:
            self.access_log.record(exchange, route, status, seconds)
        if exchange.token is not None:
            CURRENT.reset(exchange.token)
