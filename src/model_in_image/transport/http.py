"""1 リクエストの読み書き：Request（パス引数・上限付きのボディ）と Response（送る内容）。"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from model_in_image.errors import PayloadTooLargeError, UnsupportedMediaTypeError

JSON = b"application/json"


class ClientDisconnectedError(Exception):
    """応答前にクライアントが切断した。"""


@dataclass(frozen=True, slots=True)
class Response:
    """送る応答（content-type と content-length はディスパッチャが付ける）。"""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def is_json(content_type: bytes) -> bool:
    """application/json または application/*+json か。"""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class Request:
    """ハンドラが受け取るリクエスト。ボディは必要なハンドラだけが body() で読む。"""

    __slots__ = ("max_body", "params", "receive", "scope")

    def __init__(
        self, scope: Scope, receive: Receive, params: Mapping[str, str], max_body: int
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.params = params
        self.max_body = max_body

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """生のヘッダ（名前は小文字）。"""
        headers: list[tuple[bytes, bytes]] = self.scope["headers"]
        return headers

    async def body(self, accept: Callable[[bytes], bool] | None = is_json) -> bytes:
        """ボディを上限付きで読む（accept が Content-Type を、先に Content-Length を確かめる）。"""
        max_bytes = self.max_body
        for name, value in self.scope["headers"]:
            if name == b"content-type" and accept is not None and not accept(value):
                raise UnsupportedMediaTypeError(
                    f"Content-Type must be application/json, got {value.decode('latin-1')!r}"
                )
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
        message = await self.receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False) and message["type"] == "http.request":
            if len(body) > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
            return body
        chunks = [body]
        size = len(body)
        while message["type"] == "http.request" and message.get("more_body", False):
            message = await self.receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        return b"".join(chunks)


async def send_response(
    send: Send,
    response: Response,
    *,
    head: bool = False,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """応答を送る（HEAD なら同じヘッダでボディなし）。extra はこのリクエストだけのヘッダ。"""
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
        *extra,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})
