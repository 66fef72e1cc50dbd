"""高速経路：推論などの頻出ルートを FastAPI のルーティングを通さずに処理する純粋な ASGI 層。

同じハンドラは FastAPI のルートからも呼ばれる（OpenAPI ドキュメントと挙動が一致する）。
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from model_in_image.api.state import ServerState
from model_in_image.errors import (
    InvalidInputError,
    ModelServerError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

logger = logging.getLogger(__name__)

# ハンドラ：状態とボディを受け取り (ステータス, JSON バイト列) を返す
Handler = Callable[[ServerState, bytes], tuple[int, bytes]]

JSON_HEADER = (b"content-type", b"application/json")
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


async def send_json(
    send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """JSON 応答を送る。"""
    headers = [JSON_HEADER, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def run_hot_route(
    route: HotRoute, state: ServerState, max_body: int, scope: Scope, receive: Receive, send: Send
) -> int:
    """1 リクエストを処理して送ったステータスを返す。例外はここで JSON 応答に変える。"""
    try:
        body = await read_body(scope, receive, max_body) if route.reads_body else b""
        status, payload = route.handler(state, body)
    except ModelServerError as exc:
        status, payload = exc.status_code, error_body(exc)
    except ClientDisconnectedError:
        return 499
    except Exception:
        logger.exception("unhandled error on %s %s", route.method, route.path)
        status, payload = 500, INTERNAL_ERROR
    await send_json(send, status, payload)
    return status


class HotPathDispatcher:
    """(メソッド, パス) が一致すれば高速経路、それ以外は FastAPI に渡す。"""

    def __init__(
        self, app: ASGIApp, routes: Iterable[HotRoute], state: ServerState, max_body: int
    ) -> None:
        self.app = app
        self.state = state
        self.max_body = max_body
        self.routes = {(r.method, r.path): r for r in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI エントリポイント。"""
        if scope["type"] == "http":
            route = self.routes.get((scope["method"], scope["path"]))
            if route is not None:
                await run_hot_route(route, self.state, self.max_body, scope, receive, send)
                return
        await self.app(scope, receive, send)
