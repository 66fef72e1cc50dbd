"""受信したバイト列のメッセージの区切り（ヘッダの終わり・ボディの長さ・chunk の大きさ）を数える。

httptools（llhttp）は chunk の大きさをアプリに見せないので、宣言された大きさ（とその合計）が
MAX_BODY_BYTES を超えても、その分が届くか期限が来るまで待ってしまう。ここでは llhttp に
渡す前に同じバイト列を読み、chunk の大きさの行を読んだ時点で上限と比べる（データの分は
数えて飛ばすだけ）。区切りを正確に知るため、パーサにはメッセージの境目ごとに分けて渡す：

- ヘッダ：最初の CRLF CRLF まで（llhttp は CRLF 以外の行末を拒む）。そこで on_headers_complete
  が呼ばれたか（start_body）で確かめる（リクエストの前の空行なら呼ばれず、続きを探す）。
- Content-Length のボディ：その長さだけ。上限を超えるなら読む前に断る。
- chunked のボディ：大きさの行（16 進の数字、;拡張、CRLF）、データ、CRLF の繰り返しと、
  0 の chunk の後のトレーラ（空行まで）。TCP の区切りをまたいでも状態（残りのバイト数・
  読みかけの数字）を持ち越す。

llhttp が受け付ける入力では区切りは llhttp と一致する。llhttp が拒む入力（大きさの行の
空白など）では数えるのをやめてそのまま渡し、llhttp の誤り（400）に任せる。
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

CRLFCRLF = b"\r\n\r\n"
_HEX = re.compile(rb"[0-9A-Fa-f]*")
# ふつうの大きさの行（数字・拡張・CRLF）を一度に
_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:;[^\r\n]*)?\r\n")


class Parser(Protocol):
    """バイト列を受け取るパーサ（httptools.HttpRequestParser）。"""

    def feed_data(self, data: bytes | memoryview) -> None:
        """バイト列を渡す。"""


# いま読んでいる部分（Enum より速い int。受信のたびに何度も比べる）
HEAD = 0  # ヘッダ（またはメッセージの間）
FIXED = 1  # Content-Length のボディ
SIZE = 2  # chunk の大きさの数字
EXTENSION = 3  # chunk の拡張（行末まで読み飛ばす）
SIZE_LF = 4  # 大きさの行の CR の後
DATA = 5  # chunk のデータ
DATA_CR = 6  # データの後の CR
DATA_LF = 7  # データの後の LF
TRAILER = 8  # トレーラの行の始め
TRAILER_LINE = 9  # トレーラの行の途中
TRAILER_LF = 10  # 最後の空行の LF
OFF = 11  # 数えない（Upgrade の後、llhttp が拒む入力）


def is_chunked(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bool, int | None]:
    """(chunked か, Content-Length)。chunked は Transfer-Encoding の最後の符号化（llhttp も）。"""
    coding = b""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            coding = value.rsplit(b",", 1)[-1]
        elif name == b"content-length":
            digits = value.strip()
            length = int(digits) if digits.isdigit() else None
    return coding.strip().lower() == b"chunked", length


class Framing:
    """1 つの接続の受信の区切りとボディの上限（feed がパーサに分けて渡す）。"""

    __slots__ = ("_digits", "_remaining", "_size", "_tail", "_total", "limit", "mode", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.mode = HEAD
        self.refused: str | None = None  # 上限を超えた理由（以後は渡さない）
        self._tail = b""  # ヘッダの中：直前に渡した末尾 3 バイト（CRLF CRLF が分かれたとき）
        self._remaining = 0  # Content-Length のボディ・chunk のデータの残り
        self._size = 0  # 読みかけの chunk の大きさ
        self._digits = 0  # その数字の数
        self._total = 0  # これまでの chunk の大きさの合計

    def start_body(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """on_headers_complete から：ヘッダが終わった。ボディの読み方を決め、上限と比べる。"""
        self._tail = b""
        if self.mode == OFF:
            return
        chunked, length = is_chunked(headers)
        if chunked:
            self.mode, self._size, self._digits, self._total = SIZE, 0, 0, 0
        elif length:
            self.mode, self._remaining = FIXED, length
            if length > self.limit:
                self.refused = f"Content-Length {length} exceeds the limit of {self.limit} bytes"
        else:
            self.mode = HEAD

    def stop(self) -> None:
        """数えるのをやめる（Upgrade の後はパーサがバイト列を読まない）。"""
        self.mode = OFF

    def feed(self, parser: Parser, data: bytes | memoryview) -> bool:
        """境目ごとに分けてパーサに渡す。ボディが上限を超えたら渡すのをやめて True。"""
        if self.mode == OFF:
            parser.feed_data(data)
            return False
        raw = data if isinstance(data, bytes) else data.tobytes()
        start, end = 0, len(raw)
        # ふつうの場合：リクエストの始め（ボディの無いリクエスト 1 つちょうどなら一度に渡す）
        found = raw.find(CRLFCRLF) if self.mode == HEAD and not self._tail else -1
        if found >= 0:
            self._tail = CRLFCRLF[1:]
            if found == end - 4:
                parser.feed_data(raw)
                return self.refused is not None
        view = memoryview(raw)
        if found >= 0:
            start = found + 4
            parser.feed_data(view[:start])
        while start < end and self.refused is None:
            mode = self.mode
            if mode == FIXED:
                stop = min(end, start + self._remaining)
                self._remaining -= stop - start
                if not self._remaining:
                    self.mode = HEAD
            elif mode == HEAD:
                stop = self._head_end(raw, start, end)
            elif mode == OFF:
                stop = end
            else:
                stop = self._chunked(raw, start, end)
                if self.refused is not None:
                    break
            parser.feed_data(raw if stop - start == end else view[start:stop])
            start = stop
        return self.refused is not None

    def _head_end(self, raw: bytes, start: int, end: int) -> int:
        """ヘッダの終わり（CRLF CRLF の直後）か end。"""
        tail = self._tail
        if tail:
            found = (tail + raw[start : start + 3]).find(CRLFCRLF)
            if found >= 0:
                self._tail = CRLFCRLF[1:]
                return start + found + 4 - len(tail)
        found = raw.find(CRLFCRLF, start, end)
        if found >= 0:
            self._tail = CRLFCRLF[1:]
            return found + 4
        self._tail = (tail + raw[max(start, end - 3) : end])[-3:]
        return end

    def _chunked(self, raw: bytes, start: int, end: int) -> int:
        """chunked のボディを読み進め、メッセージの終わりの直後か end を返す。"""
        at = start
        while at < end and self.refused is None:
            mode = self.mode
            if mode == DATA:
                step = min(end - at, self._remaining)
                self._remaining -= step
                at += step
                if not self._remaining:
                    self.mode = DATA_CR
            elif mode == DATA_CR and raw[at : at + 2] == b"\r\n":  # ふつうは一度に
                at += 2
                self.mode = SIZE
            elif mode == SIZE:
                line = _LINE.match(raw, at, end) if not self._digits else None
                if line is None:
                    at = self._size_digits(raw, at, end)
                else:
                    self._add_digits(line.group(1))
                    at = line.end()
                    self.mode = self._line_done()
            elif mode in (EXTENSION, TRAILER_LINE):
                newline = raw.find(b"\n", at, end)
                if newline < 0:
                    return end
                at = newline + 1
                self.mode = self._line_done() if mode == EXTENSION else TRAILER
            else:
                at = self._byte(raw[at], at + 1)
                if self.mode == HEAD:  # メッセージの終わり：続きは次のリクエスト
                    return at
            if self.mode == OFF:  # llhttp が拒む（400）：そのまま渡す
                return end
        return end

    def _byte(self, byte: int, at: int) -> int:
        """1 バイトで決まる状態（CR・LF・トレーラの行の始め）。"""
        mode = self.mode
        if mode == SIZE_LF and byte == 0x0A:
            self.mode = self._line_done()
        elif mode == DATA_CR and byte == 0x0D:
            self.mode = DATA_LF
        elif mode == DATA_LF and byte == 0x0A:
            self.mode = SIZE
        elif mode == TRAILER:
            self.mode = TRAILER_LF if byte == 0x0D else TRAILER_LINE
        elif mode == TRAILER_LF and byte == 0x0A:
            self.mode = HEAD
        else:
            self.mode = OFF
        return at

    def _size_digits(self, raw: bytes, at: int, end: int) -> int:
        """TCP の区切りをまたぐ大きさの行：数字を読み、; か CR で次の状態へ。"""
        digits = _HEX.match(raw, at, end)
        run = digits.group() if digits is not None else b""
        self._add_digits(run)
        at += len(run)
        if at < end and self.refused is None:
            byte = raw[at]
            self.mode = EXTENSION if byte == 0x3B else SIZE_LF if byte == 0x0D else OFF
            at += 1
        return at

    def _add_digits(self, run: bytes) -> None:
        """大きさの数字を足し、合計が上限を超えたら refused（行の終わりを待たない）。"""
        if not run:
            return
        self._size = (self._size << (4 * len(run))) | int(run, 16)
        self._digits += len(run)
        if self._total + self._size > self.limit:
            self.refused = (
                f"chunked body of at least {self._total + self._size} bytes exceeds "
                f"the limit of {self.limit} bytes"
            )

    def _line_done(self) -> int:
        """大きさの行の終わり：0 ならトレーラ、それ以外はデータ。数字が無ければ llhttp に任せる。"""
        size, self._size = self._size, 0
        digits, self._digits = self._digits, 0
        if not digits:
            return OFF
        if not size:
            return TRAILER
        self._total += size
        self._remaining = size
        return DATA
