"""接続の保護（GuardedHttpToolsProtocol）と accept（eventloop.Listener）：同一プロセスの実サーバー。

サブプロセスのサーバーでの振る舞い（メモリ・過負荷・シグナル）は tests/hardening にある。
ここでは同じ規則をプロセス内で確かめる（速く、カバレッジにも数えられる）。
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from model_in_image.api.app import create_app
from model_in_image.errors import ModelServerError
from model_in_image.server import uvicorn_config
from model_in_image.transport.connection import IN_FLIGHT, MAX_PIPELINED, ServerConfig
from model_in_image.transport.connections import begin_drain, reset_drain
from model_in_image.transport.cycle import CoalescingCycle
from model_in_image.transport.dispatcher import Dispatcher
from model_in_image.transport.http import Request, Response
from model_in_image.transport.routing import Route, RouteDoc, Router
from support.apps import SettingsFactory
from support.net import free_port, wait_for

TIMEOUT = 0.5


@contextlib.contextmanager
def serving(config: ServerConfig) -> Iterator[int]:
    """config のサーバーをスレッドで動かしポートを返す（serve() と同じくソケットを渡す）。"""
    instance = uvicorn.Server(config)
    sock = config.bind_socket()
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: instance.started, 10.0, "server start")
        yield config.port
    finally:
        instance.should_exit = True
        thread.join(timeout=10)
        sock.close()
        reset_drain()


def _config(settings: Any) -> ServerConfig:
    config = uvicorn_config(settings, multiprocess=False)
    config.log_config = None
    return config


@pytest.fixture
def server(make_settings: SettingsFactory) -> Iterator[int]:
    """REQUEST_TIMEOUT_SECONDS=0.5 のサーバー。"""
    settings = make_settings(
        port=free_port(), request_timeout_seconds=TIMEOUT, max_header_bytes=4096, max_url_bytes=1024
    )
    with serving(_config(settings)) as port:
        yield port


@pytest.fixture
def keep_alive_server(make_settings: SettingsFactory) -> Iterator[int]:
    """keep-alive 1 秒・受信の期限 30 秒のサーバー（接続のタイマーは長い方で作られる）。"""
    settings = make_settings(port=free_port(), request_timeout_seconds=30, timeout_keep_alive=1)
    with serving(_config(settings)) as port:
        yield port


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """サーバーが接続を閉じたら True（応答の有無は問わない）。"""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize(
    "payload",
    [b"", b"POST /predict HTTP/1.1\r\nHost: a\r\n"],
    ids=["idle", "partial-headers"],
)
def test_stalled_connection_is_closed(server: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        if payload:
            sock.sendall(payload)
        start = time.monotonic()
        assert closed_within(sock, TIMEOUT + 3)
        assert time.monotonic() - start >= TIMEOUT - 0.2


def test_complete_request_is_served_and_kept_alive(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_idle_keep_alive_closes_after_its_own_timeout(keep_alive_server: int) -> None:
    """受信の期限（30 秒）のタイマーがあっても、応答の後は keep-alive の期限（1 秒）で閉じる。"""
    with socket.create_connection(("127.0.0.1", keep_alive_server), timeout=5) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        # 目標 1 秒、上の判定は 5 倍以上の余裕（下は期限より前に閉じないこと）
        assert closed_within(sock, 6)
        assert 0.8 <= time.monotonic() - start < 6


def test_request_started_on_a_kept_alive_connection_gets_the_request_timeout(
    keep_alive_server: int,
) -> None:
    """keep-alive の期限の前に次のリクエストが始まれば、その後は受信の期限で数える。"""
    with socket.create_connection(("127.0.0.1", keep_alive_server), timeout=5) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /livez HTTP/1.1\r\n")
        time.sleep(2)  # keep-alive の期限（1 秒）を過ぎても閉じない
        sock.sendall(b"Host: a\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_oversized_headers_close_the_connection(server: int) -> None:
    filler = b"X-Filler: " + b"a" * (4096 + 1) + b"\r\n"
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        try:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n" + filler + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        assert closed_within(sock, 3)


def test_app_is_reachable_through_the_factory(make_settings: SettingsFactory) -> None:
    assert create_app(make_settings()).settings.request_timeout_seconds == 30.0


def exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """送って、サーバーが閉じるまで読む。"""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        sender.join(timeout=timeout)
    return received


def status_of(response: bytes) -> bytes:
    """応答の最初のステータスコード。"""
    return response.split(b"\r\n", 1)[0].split(b" ")[1]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"GET /livez?" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),
        (b"GET /livez HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * 5000 + b"\r\n\r\n", b"431"),
        (b"GET /livez HTTP/1.1\r\nHost: a\r\n" + b"X-B: c\r\n" * 1000 + b"\r\n", b"431"),
        (b"GET /livez HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /livez HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
    ],
    ids=["long-url", "long-header", "many-headers", "no-host", "two-hosts"],
)
def test_head_rules_answer_and_close(server: int, payload: bytes, status: bytes) -> None:
    response = exchange(server, payload)
    assert status_of(response) == status, response[:200]
    assert b"connection: close" in response
    assert response.endswith(b'"}')  # JSON の detail


def test_head_streamed_in_pieces_is_cut_at_the_limit(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\nX-A: ")
        try:
            for _ in range(100):
                sock.sendall(b"a" * 1000)
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = sock.recv(4096)
    assert status_of(response) == b"431"


def test_pipelined_requests_beyond_the_bound_wait_and_are_all_answered(server: int) -> None:
    count = 500  # 1 つの受信で MAX_PIPELINED を超える
    request = b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n"
    response = exchange(
        server, request * count + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    )
    assert response.count(b"HTTP/1.1 200 OK") == count + 1


def test_drain_closes_idle_connections_and_answers_with_connection_close(server: int) -> None:
    with (
        socket.create_connection(("127.0.0.1", server), timeout=5) as busy,
        socket.create_connection(("127.0.0.1", server), timeout=5) as idle,
    ):
        for sock in (busy, idle):
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
            assert b"connection: close" not in sock.recv(4096)
        begin_drain()
        busy.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
        assert b"connection: close" in busy.recv(4096)
        assert closed_within(idle, 2.0)  # DRAIN_IDLE_SECONDS の後


@pytest.fixture
def server_config(make_settings: SettingsFactory) -> Any:
    """serve() と同じ uvicorn の設定（アプリだけ差し替えて使う）。"""
    return uvicorn_config(make_settings(port=free_port()), multiprocess=False)


@contextlib.contextmanager
def running(app: Any, config: ServerConfig) -> Iterator[int]:
    """config のまま app を動かすサーバー（ライフスパンなし）。"""
    config.app, config.lifespan, config.log_config = app, "off", None
    config.loaded = False
    with serving(config) as port:
        yield port


def test_request_extensions_carry_the_in_flight_count(server_config: Any) -> None:
    """受け入れ制御の入力：scope["extensions"] に処理待ちの数が入る（この接続の分は含まない）。"""
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["extensions"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with running(app, server_config) as port:
        exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert [extensions[IN_FLIGHT] for extensions in seen] == [0]


SEEN_BY_NEXT: contextvars.ContextVar[str] = contextvars.ContextVar("seen_by_next")


def test_pipelined_requests_do_not_inherit_the_previous_context(server_config: Any) -> None:
    """パイプラインの次のリクエストは前の send の中で始まる：前の文脈（ID など）を引き継がない。"""
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(SEEN_BY_NEXT.get(None))
        SEEN_BY_NEXT.set(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with running(app, server_config) as port:
        request = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
        exchange(port, request * 5 + b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert seen == [None] * 6


CLOSE = b"\r\nConnection: close\r\n\r\n"


def _ok_dispatcher() -> Dispatcher:
    async def ok(request: Request) -> Response:
        return Response(200, b'{"ok":1}')

    def errors(exc: ModelServerError) -> Response:
        return Response(500, b"{}")

    doc = RouteDoc("ok", "ok", "test", "ok")
    return Dispatcher([Route("GET", "/ok", ok, errors, doc)], fallback=_no_fallback, max_body=64)


async def _no_fallback(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the fallback must not be called")


def test_dispatcher_responses_go_out_in_one_piece(server_config: Any) -> None:
    """ディスパッチャの応答は respond で：ステータス行・ヘッダ・Content-Length・ボディ。"""
    with running(_ok_dispatcher(), server_config) as port:
        received = exchange(port, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-length: 8" in head
    assert b"\r\nconnection: close" in head
    assert body == b'{"ok":1}'


def test_a_served_request_leaves_no_reference_cycle(server_config: Any) -> None:
    """応答を送り終えたサイクルは参照カウントで消える（循環参照で GC を待たない）。

    scope に respond を入れていた版では scope → respond → サイクル → scope が循環し、
    1 件ごとに 12 個のオブジェクトが GC の回収まで残った（1 ワーカー c=1 で約 60 件ごとに GC）。
    """
    request = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
    with running(_ok_dispatcher(), server_config) as port:
        exchange(port, request.replace(b"\r\n\r\n", CLOSE))  # 暖機（初回だけ作られるもの）
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            received = exchange(port, request * 5 + request.replace(b"\r\n\r\n", CLOSE))
            gc.collect()
            left = [type(obj).__name__ for obj in gc.garbage if isinstance(obj, CoalescingCycle)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert received.count(b"HTTP/1.1 200 OK") == 6
    assert left == []


def test_responses_written_at_the_end_of_the_turn_keep_their_order(server_config: Any) -> None:
    """ほかの接続のリクエストが処理中（書き込みを周回の終わりにまとめる）でも、パイプラインの
    応答は順に届き、後ろの壊れたリクエストの 400 は先の応答の後に来る（300 件 + 壊れた 1 件）。"""

    started = threading.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await asyncio.sleep(1.0)
        return Response(200, b'{"slow":1}')

    dispatcher = _ok_dispatcher()
    doc = RouteDoc("slow", "slow", "test", "slow")
    dispatcher.router = Router([*dispatcher.router.routes, Route("GET", "/slow", slow, _500, doc)])
    ok = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
    with running(dispatcher, server_config) as port:
        held: list[bytes] = []
        holder = threading.Thread(
            target=lambda: held.append(exchange(port, b"GET /slow HTTP/1.1\r\nHost: a" + CLOSE))
        )
        holder.start()
        assert started.wait(5)  # /slow が処理中（処理待ち 2 件以上の間は書き込みをまとめる）
        received = exchange(port, ok * 300 + b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        holder.join(timeout=5)
    # 最初の 8 KiB で受け取った分には全部応答し、残りを読んだところで 400 を返して閉じる
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert len(statuses) > MAX_PIPELINED
    assert statuses == [b"200"] * (len(statuses) - 1) + [b"400"]
    assert received.count(b'{"ok":1}') == len(statuses) - 1
    assert len(held) == 1
    assert held[0].startswith(b"HTTP/1.1 200 OK")


def _500(exc: ModelServerError) -> Response:
    return Response(500, b"{}")


def test_a_middleware_that_wraps_send_still_sees_the_response(server_config: Any) -> None:
    """外側のミドルウェアが send を包んだら respond を使わない（包んだ send が応答を通す）。"""
    dispatcher = _ok_dispatcher()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-wrapped", b"1")]}
            await send(message)

        await dispatcher(scope, receive, wrapped)

    with running(app, server_config) as port:
        received = exchange(port, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"\r\nx-wrapped: 1" in head
    assert body == b'{"ok":1}'
