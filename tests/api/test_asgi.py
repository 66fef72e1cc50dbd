"""ディスパッチャを ASGI で直接呼ぶ：分割されたボディ・切断・SIGTERM でのドレイン。"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator, MutableMapping
from types import FrameType
from typing import Any

import orjson
import pytest

from model_in_image.api.app import install_drain_handler
from model_in_image.api.seed.endpoints import SeedAPI
from model_in_image.dataplane import DataPlane
from model_in_image.state import ServerState
from model_in_image.transport.dispatcher import Dispatcher
from model_in_image.transport.http import ClientDisconnectedError, Request
from model_in_image.transport.routing import NO_PARAMS

Message = MutableMapping[str, Any]
MODEL = "iris_svc"


def _scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    default = [(b"content-type", b"application/json")]
    return {
        "type": "http",
        "method": "POST",
        "path": "/predict/label",
        "headers": headers or default,
    }


def _receiver(messages: list[Message]) -> Any:
    queue = iter(messages)

    async def receive() -> Message:
        return next(queue)

    return receive


def _chunks(body: bytes, size: int) -> list[Message]:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in parts]
    return [*messages, {"type": "http.request", "body": b"", "more_body": False}]


def _loaded(dataplane: DataPlane) -> ServerState:
    return ServerState(model_name=MODEL, dataplane=dataplane)


def _run(
    state: ServerState, messages: list[Message], max_body: int = 4096
) -> tuple[int, list[Message]]:
    """POST /predict/label のルートをディスパッチャの handle() で実行する。"""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    seed = SeedAPI(state)
    if state.dataplane is not None:  # ライフスパンと同じく、読み込んだモデルで前計算する
        seed.prepare(state.dataplane)
    (route,) = [r for r in seed.routes() if r.path == "/predict/label"]
    dispatcher = Dispatcher([route], fallback=_unreachable, max_body=max_body)
    status = asyncio.run(dispatcher.handle(route, NO_PARAMS, _scope(), _receiver(messages), send))
    return status, sent


async def _unreachable(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the fallback must not be called")


def _read_body(scope: dict[str, Any], receive: Any, max_body: int) -> bytes:
    return asyncio.run(Request(scope, receive, NO_PARAMS, max_body).body())


BODY = b'{"data": [[5.1, 3.5, 1.4, 0.2], [6.3, 2.9, 5.6, 1.8]]}'


def test_streamed_body_is_joined(dataplane: DataPlane) -> None:
    status, sent = _run(_loaded(dataplane), _chunks(BODY, 7))
    assert status == 200
    assert sent[0]["status"] == 200
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"]) == {"prediction": ["setosa", "virginica"]}


def test_streamed_body_over_the_limit_stops_early(dataplane: DataPlane) -> None:
    body = b'{"data": [' + b"[5.1, 3.5, 1.4, 0.2]," * 100 + b"[5.1, 3.5, 1.4, 0.2]]}"
    messages = _chunks(body, 512)
    status, sent = _run(_loaded(dataplane), messages, max_body=1024)
    assert status == 413
    assert orjson.loads(sent[1]["body"]) == {
        "detail": "request body exceeds the limit of 1024 bytes"
    }


def test_client_disconnect_sends_nothing(dataplane: DataPlane) -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": BODY[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]
    status, sent = _run(_loaded(dataplane), messages)
    assert status == 499
    assert sent == []


def test_read_body_raises_on_disconnect() -> None:
    receive = _receiver(
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    )
    with pytest.raises(ClientDisconnectedError):
        _read_body(_scope(), receive, 1024)


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"application/vnd.api+json", b"APPLICATION/JSON; charset=UTF-8"],
)
def test_json_media_types(content_type: bytes) -> None:
    scope = _scope([(b"content-type", content_type)])
    receive = _receiver([{"type": "http.request", "body": b"{}"}])
    assert _read_body(scope, receive, 1024) == b"{}"


@pytest.fixture
def sigterm() -> Iterator[list[int]]:
    """SIGTERM のハンドラを記録用に差し替え、テスト後に元へ戻す。"""
    original = signal.getsignal(signal.SIGTERM)
    calls: list[int] = []

    def record(signum: int, _: FrameType | None) -> None:
        calls.append(signum)

    signal.signal(signal.SIGTERM, record)
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, original)


def test_sigterm_drains_then_forwards(sigterm: list[int]) -> None:
    state = ServerState(model_name=MODEL)
    before = signal.getsignal(signal.SIGTERM)

    async def scenario() -> None:
        restore = install_drain_handler(state, 0.01)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        assert state.draining is True
        assert sigterm == []  # まだ uvicorn には渡さない
        await asyncio.sleep(0.1)
        assert sigterm == [signal.SIGTERM]
        handler(signal.SIGTERM, None)  # 2 回目は即座に渡す
        assert sigterm == [signal.SIGTERM, signal.SIGTERM]
        restore()

    asyncio.run(scenario())
    assert signal.getsignal(signal.SIGTERM) is before
    assert not state.ready


def test_sigterm_calls_on_drain_once_on_the_loop(sigterm: list[int]) -> None:
    """gRPC のヘルスを落とすフック：最初の SIGTERM で 1 度だけ、イベントループの上で呼ぶ。"""
    state = ServerState(model_name=MODEL)
    drained: list[bool] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def on_drain() -> None:
            drained.append(asyncio.get_running_loop() is loop)

        restore = install_drain_handler(state, 10.0, on_drain=on_drain)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        assert drained == []  # シグナルハンドラの中では呼ばず、ループに預ける
        await asyncio.sleep(0.01)
        assert drained == [True]
        handler(signal.SIGTERM, None)  # 2 回目は uvicorn へ渡すだけ
        await asyncio.sleep(0.01)
        assert drained == [True]
        assert sigterm == [signal.SIGTERM]
        restore()

    asyncio.run(scenario())


def test_drain_handler_is_a_no_op_off_the_main_thread() -> None:
    import threading

    state = ServerState(model_name=MODEL)
    before = signal.getsignal(signal.SIGTERM)
    result: list[Any] = []

    def worker() -> None:
        async def install() -> None:
            result.append(install_drain_handler(state, 1.0))

        asyncio.run(install())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    result[0]()
    assert signal.getsignal(signal.SIGTERM) is before
