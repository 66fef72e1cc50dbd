"""1 リクエストの読み書き：Request（パス引数・上限付きのボディ）と Response（送る内容）。"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from model_in_image.errors import PayloadTooLargeError, UnsupportedMediaTypeError
from model_in_image.transport.limits import BODY_TOO_LARGE

JSON = b"application/json"
# curl -d の既定の Content-Type。ボディが JSON なら JSON として読む（Triton・KServe と同じ）
FORM = b"application/x-www-form-urlencoded"


class ClientDisconnectedError(Exception):
    """応答前にクライアントが切断した。"""


@dataclass(frozen=True, slots=True)
class Response:
    """送る応答（content-type と content-length はディスパッチャが付ける）。"""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def media_type(content_type: bytes) -> bytes:
    """Content-Type のメディア型（引数を除き小文字）。"""
    return content_type.split(b";", 1)[0].strip().lower()


def is_json(media: bytes) -> bool:
    """メディア型（media_type の値）が application/json または application/*+json か。"""
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def looks_like_json(body: bytes) -> bool:
    """先頭の空白の後が { か [ か（フォームの a=b と見分ける。構文はデコーダが確かめる）。"""
    return body.lstrip(b" \t\r\n")[:1] in (b"{", b"[")


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
        """ボディを上限付きで読む（accept がメディア型を、先に Content-Length を確かめる）。

        Content-Type が無いか FORM で、ボディが JSON に見えれば JSON として返す。
        FORM で JSON でないボディと、accept が拒む型は 415。
        """
        max_bytes = self.max_body
        form = False
        for name, value in self.scope["headers"]:
            if name == b"content-type":
                media = media_type(value)
                form = media == FORM
                if not form and accept is not None and not accept(media):
                    raise UnsupportedMediaTypeError(
                        f"Content-Type must be application/json, got {value.decode('latin-1')!r}"
                    )
            elif name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
        body = await self._read(max_bytes)
        if form and not looks_like_json(body):
            raise UnsupportedMediaTypeError(
                f"Content-Type must be application/json, got {FORM.decode()!r} "
                "with a body that is not JSON"
            )
        return body

    async def _read(self, max_bytes: int) -> bytes:
        """ボディを最後まで読む（max_bytes を超えたら 413、途中で切断されたら例外）。

        接続が chunk の大きさで上限超えを知らせたら（BODY_TOO_LARGE）、データを待たずに 413。
        """
        message = await self.receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False) and message["type"] == "http.request":
            if len(body) > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
            return body
        chunks = [body]
        size = len(body)
        extensions = self.scope.get("extensions") or {}
        while message["type"] == "http.request" and message.get("more_body", False):
            if BODY_TOO_LARGE in extensions:  # 受信の途中で上限を超えた（transport.limits）
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
            message = await self.receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        return b"".join(chunks)


Respond = Callable[[int, Sequence[tuple[bytes, bytes]], bytes], Awaitable[None]]


async def send_response(
    send: Send,
    response: Response,
    *,
    head: bool = False,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    respond: Respond | None = None,
) -> None:
    """応答を送る（HEAD なら同じヘッダでボディなし）。extra はこのリクエストだけのヘッダ。

    respond（接続の拡張、transport.cycle）があれば ASGI のメッセージを作らずに 1 回で送る
    （Content-Length は respond が付け、HEAD ではボディを書かない）。
    """
    if respond is not None:
        await respond(
            response.status,
            [(b"content-type", response.content_type), *response.headers, *extra],
            response.body,
        )
        return
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
        *extra,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})
