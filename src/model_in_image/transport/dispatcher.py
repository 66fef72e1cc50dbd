"""ディスパッチャ：ルート表を照合してハンドラを実行する純粋な ASGI アプリ（唯一のリクエスト経路）。

表にないパス（/docs・/openapi.json など）は FastAPI に渡す。どちらの経路もここで
メトリクスを記録し（route はパステンプレート、method は既知のものか other）、
X-Request-ID・アクセスログ・スパンを observability に任せる。
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from time import perf_counter

from starlette.types import ASGIApp, Receive, Scope, Send

from model_in_image.errors import ModelServerError, OverloadedError
from model_in_image.metrics import Metrics
from model_in_image.observability.request_id import Exchange
from model_in_image.observability.telemetry import RequestTelemetry
from model_in_image.transport.connection import IN_FLIGHT
from model_in_image.transport.cycle import CoalescingCycle
from model_in_image.transport.http import ClientDisconnectedError, Request, Response, send_response
from model_in_image.transport.routing import Route, Router

logger = logging.getLogger(__name__)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED = "unmatched"
DISCONNECTED = 499  # 応答を送る前にクライアントが切断した（nginx の慣例）
INTERNAL_ERROR = "Internal server error"
RETRY_AFTER = (b"retry-after", b"1")


def method_label(method: str) -> str:
    """メトリクスの method ラベル（既知のメソッド以外は other）。"""
    return method if method in KNOWN_METHODS else "other"


def method_not_allowed(methods: Iterable[str]) -> Response:
    """405（FastAPI と同じ本文、Allow ヘッダ付き）。"""
    allowed = sorted(methods)
    if "GET" in allowed:
        allowed.append("HEAD")
    return Response(
        405, b'{"detail":"Method Not Allowed"}', headers=((b"allow", ", ".join(allowed).encode()),)
    )


class Dispatcher:
    """ルート表の照合・実行・誤りの応答・メトリクス。表にないものは fallback へ。"""

    def __init__(
        self,
        routes: Iterable[Route],
        fallback: ASGIApp,
        *,
        max_body: int,
        max_in_flight: int | None = None,
    ) -> None:
        self.router = Router(routes)
        self.fallback = fallback
        self.max_body = max_body
        self.max_in_flight = max_in_flight
        self.metrics: Metrics | None = None
        self.telemetry = RequestTelemetry()

    async def handle(
        self,
        route: Route,
        params: Mapping[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        head: bool = False,
        exchange: Exchange | None = None,
    ) -> int:
        """ルートのハンドラを実行して応答を送り、ステータスを返す。例外はここで応答に変える。

        exchange があれば X-Request-ID を付け、送ったステータスと大きさを記録する
        （send を包むより安い：表のルートは応答を 1 か所で送るので）。
        """
        try:
            response = await route.handler(Request(scope, receive, params, self.max_body))
        except OverloadedError as exc:  # 適応バッチの待ち行列が満ちた：受け入れ制御と同じ 503
            response = self._refuse(route, exc)
        except ModelServerError as exc:
            response = route.errors(exc)
        except ClientDisconnectedError:
            return DISCONNECTED
        except Exception:
            logger.exception("unhandled error on %s %s", route.method, route.path)
            response = route.errors(ModelServerError(INTERNAL_ERROR))
        await self._send(send, response, head, exchange)
        return response.status

    @staticmethod
    async def _send(send: Send, response: Response, head: bool, exchange: Exchange | None) -> None:
        # send が接続のサイクルそのものなら 1 回で書く（transport.cycle）。外側のミドルウェアが
        # send を包んでいれば、その send を通す
        cycle = getattr(send, "__self__", None)
        respond = cycle.respond if type(cycle) is CoalescingCycle else None
        if exchange is None:
            await send_response(send, response, head=head, respond=respond)
            return
        exchange.status = response.status
        exchange.sent = 0 if head else len(response.body)
        await send_response(send, response, head=head, extra=exchange.headers, respond=respond)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI エントリポイント。"""
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        metrics = self.metrics
        start = perf_counter()
        exchange = self.telemetry.begin(scope, send)  # X-Request-ID・ログの文脈・スパン
        if metrics is not None:
            metrics.active += 1
        label, status = UNMATCHED, DISCONNECTED
        try:
            found = self.router.match(scope["path"])
            if found is None:  # FastAPI の応答には send を包んで ID を付ける
                label, status = await self._fallback(scope, receive, exchange)
            else:
                methods, params = found
                label, route, head, refusal = self._select(methods, scope)
                if route is not None:
                    status = await self.handle(
                        route, params, scope, receive, send, head=head, exchange=exchange
                    )
                elif refusal is not None:
                    await self._send(send, refusal, head, exchange)
                    status = refusal.status
        finally:
            seconds = perf_counter() - start
            if metrics is not None:
                metrics.active -= 1
                metrics.observe_request(label, method_label(scope["method"]), status, seconds)
            self.telemetry.finish(exchange, label, status, seconds)  # アクセスログ・スパン

    def _select(
        self, methods: Mapping[str, Route], scope: Scope
    ) -> tuple[str, Route | None, bool, Response | None]:
        """パスが一致したルートからメソッドで選ぶ：(ラベル, 実行するルート, HEAD か, 断る応答)。"""
        method = scope["method"]
        head = method == "HEAD" and method not in methods
        route = methods.get("GET" if head else method)
        if route is None:
            return next(iter(methods.values())).path, None, head, method_not_allowed(methods)
        if not route.probe and self._overloaded(scope):
            return route.path, None, head, self._reject(route)
        return route.path, route, head, None

    def _overloaded(self, scope: Scope) -> bool:
        """サーバー（uvicorn の接続）が知らせた処理待ちの数が上限以上か。"""
        if self.max_in_flight is None:
            return False
        extensions = scope.get("extensions")
        in_flight = extensions.get(IN_FLIGHT) if extensions else None
        return in_flight is not None and in_flight >= self.max_in_flight

    def _reject(self, route: Route) -> Response:
        """受け入れ制御で断る。"""
        message = f"server is overloaded ({self.max_in_flight} requests in flight); retry later"
        return self._refuse(route, OverloadedError(message))

    def _refuse(self, route: Route, exc: OverloadedError) -> Response:
        """503 + Retry-After（ルートの API の誤りの形式）。断った数に数える。"""
        if self.metrics is not None:
            self.metrics.rejected += 1
        response = route.errors(exc)
        return Response(
            response.status, response.body, response.content_type, (*response.headers, RETRY_AFTER)
        )

    async def _fallback(
        self, scope: Scope, receive: Receive, exchange: Exchange
    ) -> tuple[str, int]:
        """FastAPI に渡す。ラベルは Starlette が一致させたルートのパステンプレート、
        ステータスは exchange.send が記録した送ったもの。"""
        await self.fallback(scope, receive, exchange.send)
        matched = scope.get("route")
        status = DISCONNECTED if exchange.status is None else exchange.status
        return getattr(matched, "path", UNMATCHED), status
