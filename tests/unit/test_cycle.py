"""CoalescingCycle：ステータス行・ヘッダ・ボディを 1 回で書く（HEAD と誤りは uvicorn のまま）。"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from model_in_image.transport.connections import CONNECTIONS
from model_in_image.transport.cycle import OUTBOX, CoalescingCycle, flush_responses

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


def respond(cycle: CoalescingCycle, status: int, headers: Any, body: bytes) -> None:
    asyncio.run(cycle.respond(status, headers, body))


JSON: Any = [(b"content-type", b"application/json"), (b"x-request-id", b"abc")]


def test_respond_writes_the_whole_response_once_with_its_length() -> None:
    """ASGI のメッセージ無しの経路：既定のヘッダ・応答のヘッダ・Content-Length・ボディを 1 回で。"""
    cycle, transport, completed = make_cycle()
    respond(cycle, 200, JSON, b'{"a":1}')
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 00:00:00 GMT\r\n"
        b"content-type: application/json\r\nx-request-id: abc\r\ncontent-length: 7\r\n\r\n"
        b'{"a":1}'
    ]
    assert completed == [1]
    assert cycle.response_complete
    assert cycle.message_event.is_set()
    assert not transport.closed


def test_respond_closes_after_the_response_when_not_keep_alive() -> None:
    cycle, transport, completed = make_cycle(keep_alive=False)
    respond(cycle, 503, JSON, b"{}")
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"content-length: 2\r\nconnection: close\r\n\r\n{}" in written
    assert transport.closed
    assert completed == [1]


def test_respond_to_head_sends_the_length_of_the_body_without_it() -> None:
    """HEAD は uvicorn の send の手順：同じ Content-Length で、ボディは書かない。"""
    cycle, transport, completed = make_cycle("HEAD")
    respond(cycle, 200, JSON, b'{"a":1}')
    assert b"".join(transport.writes).endswith(b"content-length: 7\r\n\r\n")
    assert completed == [len(transport.writes)]


def test_respond_refuses_a_header_value_with_a_line_break() -> None:
    """応答分割の防止（uvicorn と同じ規則）：何も書かずに誤り。"""
    cycle, transport, completed = make_cycle()
    with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
        respond(cycle, 200, [(b"x-request-id", b"a\r\nset-cookie: x")], b"{}")
    assert transport.writes == []
    assert completed == []
    assert not cycle.response_started


def test_respond_after_a_disconnect_writes_nothing() -> None:
    cycle, transport, completed = make_cycle()
    cycle.disconnected = True
    respond(cycle, 200, JSON, b"{}")
    assert transport.writes == []
    assert completed == []


def test_respond_reuses_the_default_headers_until_uvicorn_replaces_the_list() -> None:
    """date は秒ごとに新しいリストに替わる：替わったら新しい値を書く。"""
    first, transport, _ = make_cycle()
    respond(first, 200, JSON, b"{}")
    second, later, _ = make_cycle()
    second.default_headers = [(b"date", b"Mon, 07 Dec 2026 00:00:01 GMT")]
    respond(second, 200, JSON, b"{}")
    assert b"00:00:00 GMT" in transport.writes[0]
    assert b"00:00:01 GMT" in later.writes[0]
    assert b"00:00:00" not in later.writes[0]


def test_respond_writes_at_the_end_of_the_turn_when_other_requests_are_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ほかにも処理中なら、書き込みは周回の終わりにまとめて（順に書き、閉じるのはその後）。"""
    monkeypatch.setattr(CONNECTIONS, "in_flight", 2)
    first, first_transport, _ = make_cycle()
    second, second_transport, completed = make_cycle(keep_alive=False)
    during: list[tuple[int, int]] = []

    async def run() -> None:
        await first.respond(200, JSON, b"1")
        await second.respond(200, JSON, b"2")
        during.append((len(first_transport.writes), len(second_transport.writes)))
        await asyncio.sleep(0)  # 次の周回

    asyncio.run(run())
    assert during == [(0, 0)]
    assert completed == [0]  # 応答は済んだ（次のリクエストへ進める）：書くのはその後
    assert first_transport.writes[0].endswith(b"\r\n\r\n1")
    assert second_transport.writes[0].endswith(b"connection: close\r\n\r\n2")
    assert second_transport.closed
    assert not first_transport.closed
    assert not OUTBOX.items


def test_flush_responses_writes_now_and_drops_only_closed_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """接続を閉じる前の flush_responses：溜めた応答をその場で書く（閉じた接続の分だけ捨てる）。"""
    monkeypatch.setattr(CONNECTIONS, "in_flight", 2)
    kept, kept_transport, _ = make_cycle()
    gone, gone_transport, _ = make_cycle()
    written: list[int] = []

    async def run() -> None:
        await kept.respond(200, JSON, b"1")
        await gone.respond(200, JSON, b"2")
        gone_transport.closed = True  # 相手が切断した（FakeTransport は閉じた後の write を拒む）
        flush_responses()
        written.append(len(kept_transport.writes))
        await asyncio.sleep(0)

    asyncio.run(run())
    assert written == [1]
    assert len(kept_transport.writes) == 1
    assert gone_transport.writes == []
    assert not OUTBOX.items


def test_a_lone_request_is_written_at_once() -> None:
    """処理中がこのリクエストだけなら待たせない（まとめる相手がいない）。"""
    assert CONNECTIONS.in_flight <= 1
    cycle, transport, _ = make_cycle()
    respond(cycle, 200, JSON, b"1")
    assert len(transport.writes) == 1
    assert not OUTBOX.items
