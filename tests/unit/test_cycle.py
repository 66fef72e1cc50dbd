"""CoalescingCycle：ステータス行・ヘッダ・ボディを 1 回で書く（HEAD と誤りは uvicorn のまま）。"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from model_in_image.transport.cycle import CoalescingCycle

LOGGER = logging.getLogger("test.cycle")


class FakeTransport:
    """書き込みと close を記録する transport。"""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def make_cycle(
    method: str = "POST", *, keep_alive: bool = True
) -> tuple[CoalescingCycle, FakeTransport, list[int]]:
    transport = FakeTransport()
    completed: list[int] = []
    scope: Any = {"type": "http", "method": method, "path": "/predict", "headers": []}
    fake: Any = transport  # asyncio.Transport の代わり（write・close・is_closing だけ）
    cycle = CoalescingCycle(
        scope,
        fake,
        FlowControl(fake),
        LOGGER,
        LOGGER,
        False,
        [(b"date", b"Mon, 07 Dec 2026 00:00:00 GMT")],
        asyncio.Event(),
        False,
        keep_alive,
        lambda: completed.append(len(transport.writes)),
    )
    return cycle, transport, completed


def play(cycle: CoalescingCycle, *messages: Any) -> None:
    """メッセージを順に send する。"""

    async def run() -> None:
        for message in messages:
            await cycle.send(message)

    asyncio.run(run())


START: Any = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
BODY: Any = {"type": "http.response.body", "body": b"{}"}


def test_head_and_body_leave_in_one_write() -> None:
    cycle, transport, completed = make_cycle()
    play(cycle, START)
    assert transport.writes == []  # まだ書かない
    play(cycle, BODY)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"content-length: 2\r\n\r\n{}")
    assert completed == [1]
    assert cycle.response_complete
    assert cycle.keep_alive


def test_connection_close_writes_before_closing() -> None:
    cycle, transport, _ = make_cycle(keep_alive=False)

    play(cycle, START, BODY)
    assert len(transport.writes) == 1
    assert transport.closed
    assert b"connection: close\r\n" in transport.writes[0]


def test_head_is_sent_as_uvicorn_does() -> None:
    cycle, transport, completed = make_cycle("HEAD")

    play(cycle, START, {"type": "http.response.body", "body": b""})
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"\r\n\r\n")
    assert completed == [1]


def test_streamed_body_prefixes_only_the_first_chunk() -> None:
    cycle, transport, _ = make_cycle()
    start = {"type": "http.response.start", "status": 200, "headers": []}  # chunked

    play(
        cycle,
        start,
        {"type": "http.response.body", "body": b"ab", "more_body": True},
        {"type": "http.response.body", "body": b"c"},
    )
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
    assert transport.writes[1] == b"1\r\nc\r\n0\r\n\r\n"


def test_a_second_start_replaces_the_unsent_one() -> None:
    """start の後にアプリが失敗しても（まだ何も書いていない）、500 の start に替えて送れる。"""
    cycle, transport, _ = make_cycle()
    error = {"type": "http.response.start", "status": 500, "headers": [(b"content-length", b"1")]}

    play(cycle, START, error, {"type": "http.response.body", "body": b"x"})
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 500 ")


def test_body_longer_than_content_length_is_still_refused() -> None:
    cycle, _, _ = make_cycle()

    with pytest.raises(RuntimeError, match="longer than Content-Length"):
        play(cycle, START, {"type": "http.response.body", "body": b"too long"})


def test_disconnected_client_gets_nothing() -> None:
    cycle, transport, _ = make_cycle()
    cycle.disconnected = True

    play(cycle, START, BODY)
    assert transport.writes == []
