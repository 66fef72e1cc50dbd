"""受信の区切り（transport.framing）：llhttp と同じところで区切り、上限を超えた大きさで止める。

パイプラインの GET・Content-Length・chunked（拡張・トレーラ・先頭の 0・前の空行）を
任意の位置で分けて渡し、メッセージの境目が 1 度に渡したときの llhttp と同じかを確かめる。
"""

from __future__ import annotations

import random

import httptools
import pytest

from model_in_image.transport.framing import HEAD, Framing

LIMIT = 1024
CHUNKED_HEAD = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


class Events:
    """パーサのコールバック：メッセージの境目とボディの大きさを記録し、Framing に知らせる。"""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self.events: list[str] = []
        self.body = 0
        self.headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self.events.append("begin")
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.events.append("headers")
        self.framing.start_body(self.headers)

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.events.append(f"complete:{self.body}")
        self.body = 0


def feed(data: bytes, cuts: list[int], limit: int = 1 << 40) -> tuple[list[str], Framing, bool]:
    """cuts の位置で分けて渡す：(境目, Framing, 上限を超えたか)。"""
    framing = Framing(limit)
    events = Events(framing)
    parser = httptools.HttpRequestParser(events)
    start = 0
    for stop in [*sorted(cuts), len(data)]:
        if stop > start and framing.feed(parser, data[start:stop]):
            return events.events, framing, True
        start = max(start, stop)
    return events.events, framing, False


def message(rnd: random.Random) -> bytes:
    kind = rnd.random()
    if kind < 0.3:
        return b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    if kind < 0.6:
        body = rnd.randbytes(rnd.randrange(1, 50))
        return b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    out = CHUNKED_HEAD
    for _ in range(rnd.randrange(5)):
        data = rnd.randbytes(rnd.randrange(1, 40))
        extension = rnd.choice([b"", b";a=b", b';q="x;y"'])
        out += b"%0*x%s\r\n%s\r\n" % (rnd.randrange(1, 4), len(data), extension, data)
    return out + b"0\r\n" + rnd.choice([b"", b"X: y\r\n", b"A: b\r\nC: d\r\n"]) + b"\r\n"


def test_boundaries_match_llhttp_whatever_the_tcp_splits() -> None:
    rnd = random.Random(23)
    for _ in range(1500):
        count = rnd.randrange(1, 5)
        data = b"".join(rnd.choice([b"", b"\r\n"]) + message(rnd) for _ in range(count))
        cuts = [rnd.randrange(len(data)) for _ in range(rnd.randrange(8))]
        if rnd.random() < 0.1:
            cuts = list(range(len(data)))  # 1 バイトずつ
        whole, _, _ = feed(data, [])
        split, framing, refused = feed(data, cuts)
        assert split == whole, (data, cuts)
        assert not refused
        assert framing.mode == HEAD  # 最後のメッセージの後で次のヘッダを待つ


@pytest.mark.parametrize("one_byte_at_a_time", [False, True])
@pytest.mark.parametrize(
    "body",
    [
        b"ffffffffffffffff\r\n" + b"x" * 20,  # 宣言だけが巨大
        b"1ffffffffffffffff\r\n",  # llhttp なら 64 ビットの桁あふれ（400）
        b"0000401\r\n",  # 先頭の 0 は数えない：1025
        b"200\r\n" + b"x" * 512 + b"\r\n201;ext=1\r\n",  # 合計 1025
    ],
    ids=["huge", "overflow", "leading-zeros", "sum"],
)
def test_size_over_limit_is_refused_before_its_data(body: bytes, one_byte_at_a_time: bool) -> None:
    data = CHUNKED_HEAD + body
    cuts = list(range(len(data))) if one_byte_at_a_time else []
    events, framing, refused = feed(data, cuts, LIMIT)
    assert refused
    assert framing.refused is not None
    assert "exceeds the limit of 1024 bytes" in framing.refused
    assert events == ["begin", "headers"]  # ボディはパーサに渡していない


def test_body_exactly_at_the_limit_is_accepted() -> None:
    data = CHUNKED_HEAD + b"200\r\n" + b"x" * 512 + b"\r\n200\r\n" + b"y" * 512 + b"\r\n0\r\n\r\n"
    events, _, refused = feed(data, [], LIMIT)
    assert not refused
    assert events == ["begin", "headers", "complete:1024"]


def test_content_length_over_limit_is_refused_at_the_headers() -> None:
    data = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n" + b"x" * 1025
    events, framing, refused = feed(data, [], LIMIT)
    assert refused
    assert "Content-Length 1025" in str(framing.refused)
    assert events == ["begin", "headers"]


@pytest.mark.parametrize(
    "body",
    [b"zz\r\n", b"3 \r\nabc\r\n0\r\n\r\n", b"3\nabc\r\n0\r\n\r\n", b"3\r\nabcX\r\n"],
    ids=["not-hex", "space", "bare-lf", "no-crlf-after-data"],
)
def test_what_llhttp_rejects_is_left_to_llhttp(body: bytes) -> None:
    """llhttp が拒む大きさの行は数えずに渡す（その誤りは接続が 400 にする）。"""
    with pytest.raises(httptools.HttpParserError):
        feed(CHUNKED_HEAD + body, [], LIMIT)
