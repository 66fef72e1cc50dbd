"""高速経路：推論などの頻出ルートを FastAPI のルーティングを通さずに処理する純粋な ASGI 層。

同じハンドラは FastAPI のルートからも呼ばれる（OpenAPI ドキュメントと挙動が一致する）。
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_in_image.api.state import ServerState
from model_in_image.errors import (
    InvalidInputError,
    ModelServerError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from model_in_image.metrics import Metrics

logger = logging.getLogger(__name__)

# ハンドラ：状態とボディを受け取り (ステータス, JSON バイト列) を返す
Handler = Callable[[ServerState, bytes], tuple[int, bytes]]

JSON = b"application/json"
INTERNAL_ERROR = b'{"detail":"Internal server error"}'


class ClientDisconnectedError(Exception):
    """応答前にクライアントが切断した。"""


@dataclass(frozen=True, slots=True)
class HotRoute:
    """高速経路のルート。reads_body なら JSON ボディを読む。"""

    method: str
    path: str
    handler: Handler
    reads_body: bool = False
    content_type: bytes = JSON


def error_body(exc: ModelServerError) -> bytes:
    """エラーを {"detail": ...} にする（422 は FastAPI と同じ配列形式）。"""
    if isinstance(exc, InvalidInputError):
        return orjson.dumps({"detail": exc.errors})
    return orjson.dumps({"detail": exc.message})


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """JSON ボディを上限付きで読む（Content-Type と Content-Length を先に確かめる）。"""
    for name, value in scope["headers"]:
        if name == b"content-type" and not _is_json(value):
            raise UnsupportedMediaTypeError(
                f"Content-Type must be application/json, got {value.decode('latin-1')!r}"
            )
        if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
            raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and message["type"] == "http.request":
        if len(body) > max_bytes:
            raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
        return body
    chunks = [body]
    size = len(body)
    while message["type"] == "http.request" and message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    if message["type"] == "http.disconnect":
        raise ClientDisconnectedError
    return b"".join(chunks)


async def send_body(send: Send, status: int, body: bytes, content_type: bytes = JSON) -> None:
    """応答を送る（既定は JSON）。"""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def run_hot_route(
    route: HotRoute, state: ServerState, max_body: int, scope: Scope, receive: Receive, send: Send
) -> int:
    """1 リクエストを処理して送ったステータスを返す。例外はここで JSON 応答に変える。"""
    content_type = route.content_type
    try:
        body = await read_body(scope, receive, max_body) if route.reads_body else b""
        status, payload = route.handler(state, body)
    except ModelServerError as exc:
        status, payload, content_type = exc.status_code, error_body(exc), JSON
    except ClientDisconnectedError:
        return 499
    except Exception:
        logger.exception("unhandled error on %s %s", route.method, route.path)
        status, payload, content_type = 500, INTERNAL_ERROR, JSON
    await send_body(send, status, payload, content_type)
    return status


class HotPathDispatcher:
    """(メソッド, パス) が一致すれば高速経路、それ以外は FastAPI に渡す（メトリクスも記録）。"""

    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[HotRoute],
        state: ServerState,
        max_body: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.max_body = max_body
        self.metrics = metrics
        self.routes = {(r.method, r.path): r for r in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI エントリポイント。"""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.get((scope["method"], scope["path"]))
        metrics = self.metrics
        if metrics is None:
            if route is not None:
                await run_hot_route(route, self.state, self.max_body, scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        start = perf_counter()
        metrics.active += 1
        status = 499  # 応答を送る前に切断・失敗した場合
        try:
            if route is not None:
                status = await run_hot_route(route, self.state, self.max_body, scope, receive, send)
            else:
                status = await self._fallback(scope, receive, send)
        finally:
            metrics.active -= 1
            # ラベルの種類を有限に保つ：FastAPI のルートはパステンプレート、不一致は unmatched
            matched = route or scope.get("route")
            name = getattr(matched, "path", "unmatched")
            metrics.observe_request(name, scope["method"], status, perf_counter() - start)

    async def _fallback(self, scope: Scope, receive: Receive, send: Send) -> int:
        """FastAPI に渡し、送ったステータスを返す。"""
        sent = [499]

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent[0] = message["status"]
            await send(message)

        await self.app(scope, receive, capture)
        return sent[0]
