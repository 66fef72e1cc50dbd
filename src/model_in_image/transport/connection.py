"""HTTP 接続の保護（uvicorn の httptools 実装の拡張）：1 つの接続で Pod を倒させない規則。

- 受信の期限：接続直後とリクエストの開始から、リクエスト全体を受け取るまで（遅い・止まった
  クライアント）。応答を読まないクライアントへの書き込みも同じ期限で打ち切る。keep-alive の
  期限（応答の後、次のリクエストまで）も同じ 1 つのタイマーで数える。
- 受信中の上限：URL とヘッダの大きさは受け取る途中で数え、超えたら 414 / 431 を返して閉じる
  （httptools は断片を連結して保持するため、上限を後で確かめるとその間のコピーと記憶が無制限）。
- パイプライン：受け取り済みで未処理のリクエストがある間は読み込みを止める（応答を読まずに
  送り続けるクライアントの分を記憶に溜めない）。
- ボディ：Content-Length や chunk の大きさ（の合計）が上限を超えたら、その行を読んだ時点で
  413 と Connection: close（transport.framing・transport.limits）。
- Host：HTTP/1.1 で Host が無い・2 つ以上なら 400（RFC 9112 §3.2）。
- パーサ・URL パーサが拒むリクエスト（CONNECT x:80、GET http://[ など）は 400 と
  Connection: close。ログは間隔ごとに 1 行の WARNING（件数付き）で、トレースバックは書かない。
- Upgrade：平文の HTTP/1.1 だけを話す。Upgrade は無視してふつうに応答し、その後で閉じる
  （WebSocket のライブラリが入っていても同じ。Upgrade の後のバイト列は HTTP として読まない）。
  ボディのある Upgrade はパーサがボディを読まないので、すぐに 400 で断る。
- 処理待ちの数：ASGI の拡張 scope["extensions"][IN_FLIGHT] で、リクエストを受け取った時点の
  このワーカーの処理待ち（アプリに渡して終わっていないリクエスト）の数を渡す。受け入れるかは
  アプリが決める（uvicorn の tasks は終わったタスクを次の周回まで含むので使わない）。
- ドレイン：begin_drain() の後は応答に Connection: close を付け、アイドルの keep-alive 接続を
  短い猶予で閉じる。終了時、まだ 1 件も受け取っていない接続はリクエストを待ってから閉じる。

設定は uvicorn と同じく config（ServerConfig）から各接続に届く。
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import weakref
from typing import Any

import httptools
import uvicorn
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState as UvicornServerState

from model_in_image.transport.connections import CONNECTIONS as _CONNECTIONS
from model_in_image.transport.connections import MALFORMED, REASONS, Rejected
from model_in_image.transport.cycle import CoalescingCycle, flush_responses
from model_in_image.transport.framing import Framing
from model_in_image.transport.limits import ConnectionLimits, ServerConfig, refuse_body

IN_FLIGHT = "model_in_image.in_flight"
# 1 つの接続で受け取って処理を待たせておくリクエストの数の目安と、パーサに一度に渡す大きさ
MAX_PIPELINED = 16
FEED_SLICE = 8192
# ドレイン中のアイドル接続の猶予と、1 件も受け取っていない接続が最初のリクエストを送る猶予（秒）
DRAIN_IDLE_SECONDS = 0.5
FIRST_REQUEST_GRACE_SECONDS = 1.0


class _PipelineFlowControl(FlowControl):
    """処理待ちのパイプラインがある間は読み込みを再開しない FlowControl。"""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        super().__init__(transport)
        self._protocol = weakref.ref(protocol)

    def resume_reading(self) -> None:
        """パイプラインが空のときだけ読み込みを再開する。"""
        if not self.read_paused:  # ほとんどの呼び出し（受信も応答も止めていない）
            return
        protocol = self._protocol()
        if protocol is None or not (protocol.pipeline or protocol.has_unparsed):
            super().resume_reading()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """上の規則を加えた httptools の HTTP/1.1 プロトコル。"""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: UvicornServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.ws_protocol_class = None  # WebSocket は話さない（ライブラリの有無によらない）
        self.limits = config.limits if isinstance(config, ServerConfig) else ConnectionLimits()
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at: float | None = None
        self._timer_at = 0.0
        self._write_deadline: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_received = 0
        self._header_sum = 0
        self._url_bytes = 0
        self._hosts = 0
        self._served = 0
        self._unparsed = memoryview(b"")
        self._framing = Framing(self.limits.max_body_bytes)

    # --- 期限 ---

    # 接続の期限は 1 つ：リクエストを受け取り始めてから受け取り終えるまで（request_timeout）と、
    # 応答を送り終えてから次のリクエストまで（uvicorn の timeout_keep_alive）。過ぎたら閉じる。
    # リクエストごとにタイマーを作り直さず（uvloop では作って消すのに数 µs）期限の時刻だけを
    # 更新する。タイマーは接続に 1 つで、鳴ったときに期限がまだ先なら掛け直す。

    def _arm(self, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        self._deadline_at = deadline
        if self._deadline is None or deadline < self._timer_at:
            if self._deadline is not None:
                self._deadline.cancel()
            self._timer_at = deadline
            self._deadline = self.loop.call_at(deadline, self._expire)

    def _disarm(self) -> None:
        self._deadline_at = None

    def _cancel_deadline(self) -> None:
        self._deadline_at = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._deadline_at is None:  # 処理中（期限なし）
            return
        if self.loop.time() < self._deadline_at:  # その後に掛け直された期限
            self._timer_at = self._deadline_at
            self._deadline = self.loop.call_at(self._deadline_at, self._expire)
            return
        if not self.transport.is_closing():
            self.logger.debug("closing a connection that was idle or slow past its deadline")
            self._close()

    def _write_expired(self) -> None:
        self._write_deadline = None
        self.logger.debug("aborting a connection that did not read its responses in time")
        self.transport.abort()

    # --- 接続 ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """期限を数え始め、パイプラインを制限する FlowControl に替える。"""
        super().connection_made(transport)
        self.flow = _PipelineFlowControl(transport, self)
        _CONNECTIONS.live.add(self)
        self._arm(self.limits.request_timeout)
        if _CONNECTIONS.draining:
            self.start_draining()

    def connection_lost(self, exc: Exception | None) -> None:
        """期限を解除する。"""
        self._cancel_deadline()
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        _CONNECTIONS.live.discard(self)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """書き込みが詰まったら期限内に読まれなければ接続を捨てる。"""
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(
                self.limits.request_timeout, self._write_expired
            )

    def resume_writing(self) -> None:
        """書き込みが流れたら期限を解除する。"""
        super().resume_writing()
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    # --- 受信 ---

    def data_received(self, data: bytes) -> None:
        """受け取ったバイト列をパーサに渡す（ふつうの小さなリクエストはそのまま 1 回で）。"""
        self._unset_keepalive_if_required()
        if len(data) <= FEED_SLICE and not (self._in_head or self.pipeline or self._unparsed):
            if self.parser is not None and not self.transport.is_closing():
                self._feed(data)
            return
        self._consume(memoryview(data))

    def _consume(self, data: memoryview) -> None:
        """少しずつパーサに渡す。処理待ちのパイプラインが多ければ残りを取っておき読み込みを止め、
        ヘッダの途中なら上限までしか渡さず、超えるなら 414 / 431 で閉じる。"""
        while data and self.parser is not None and not self.transport.is_closing():
            if len(self.pipeline) >= MAX_PIPELINED:
                self._unparsed = data
                self.flow.pause_reading()
                return
            size = FEED_SLICE
            if self._in_head:
                room = self.limits.max_header_bytes - self._head_received
                if room <= 0:
                    self._reject(self._head_too_large())
                    return
                size = min(size, room)
            part, data = data[:size], data[size:]
            if self._in_head:
                self._head_received += len(part)
            self._feed(part)

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            if self._framing.feed(self.parser, data):
                refuse_body(self, str(self._framing.refused))
        except httptools.HttpParserUpgrade:
            self._framing.stop()
            self._ignore_upgrade()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Rejected):
                self._reject(cause)
            elif isinstance(cause, httptools.HttpParserInvalidURLError):
                self._malformed("invalid request target")
            else:  # コールバックが受け取った値を扱えなかった（トレースバックは書かない）
                self._malformed(f"request the parser callbacks could not handle ({cause!r:.80})")
        except httptools.HttpParserError as exc:
            self._malformed(f"invalid HTTP request ({exc})")

    def _malformed(self, detail: str) -> None:
        """パーサが拒んだリクエスト：400 で閉じ、ログは間隔ごとに 1 行。"""
        MALFORMED.warn(self.logger, detail)
        self._reject(Rejected(400, detail))

    def _should_upgrade(self) -> bool:
        """Upgrade には応じない（ふつうの HTTP/1.1 として応答する）。"""
        return False

    def _has_body(self) -> bool:
        return any(
            (name == b"content-length" and value.strip() not in (b"", b"0"))
            or name == b"transfer-encoding"
            for name, value in self.headers
        )

    def _ignore_upgrade(self) -> None:
        """Upgrade 付きのリクエストには応答の後で閉じる（後のバイト列はパーサが読まない）。"""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self.transport.is_closing():
            self._close()

    def _close(self, last: bytes = b"") -> None:
        """接続を閉じる（このモジュールで閉じる経路はすべてここ）。周回の終わりを待つ応答を先に書き、
        順序を保ち失わない。last は最後に書くバイト列（拒否の応答）。"""
        flush_responses()
        if last:
            self.transport.write(last)
        self.transport.close()

    def _head_too_large(self) -> Rejected:
        if not self.headers:  # まだ最初のヘッダも届いていない：リクエスト行が長すぎる
            return Rejected(414, f"request line exceeds {self.limits.max_header_bytes} bytes")
        return Rejected(431, f"request headers exceed {self.limits.max_header_bytes} bytes")

    def _reject(self, rejection: Rejected) -> None:
        """JSON の誤りを返して接続を閉じる（以後の受信は捨てる）。"""
        body = json.dumps({"detail": rejection.detail}).encode()
        status = rejection.status
        self._close(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, REASONS[status], len(body), body)
        )
        self.parser = None  # type: ignore[assignment]

    def on_message_begin(self) -> None:
        """新しいリクエスト：期限と上限を数え直す。"""
        self._in_head = True
        self._head_received = 0
        self._header_sum = 0
        self._url_bytes = 0
        self._hosts = 0
        self._arm(self.limits.request_timeout)
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        """URL の断片（長すぎれば 414）。"""
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            raise Rejected(414, f"URL exceeds {self.limits.max_url_bytes} bytes")
        self.url += url  # uvicorn の on_url と同じ

    def on_header(self, name: bytes, value: bytes) -> None:
        """ヘッダ 1 つ（合計が上限を超えれば 431）。"""
        self._header_sum += len(name) + len(value) + 4  # ": " と CRLF
        if self._header_sum > self.limits.max_header_bytes:
            raise Rejected(431, f"request headers exceed {self.limits.max_header_bytes} bytes")
        # ここから uvicorn の on_header と同じ（名前を小文字にするのは 1 回だけ）
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Host を確かめ、処理待ちの数を渡し、ドレイン中なら応答の後に閉じる。"""
        self._in_head = False
        if self._hosts != 1 and self.parser.get_http_version() == "1.1":
            raise Rejected(400, "HTTP/1.1 requests need exactly one Host header")
        if self.parser.should_upgrade() and self._has_body():
            # Upgrade ではパーサがヘッダの後を読まない：ボディを捨てて応答せず、すぐに断る
            raise Rejected(400, "Upgrade is not supported on a request with a body")
        self.scope["extensions"] = {IN_FLIGHT: _CONNECTIONS.in_flight}  # type: ignore[dict-item]
        self._framing.start_body(self.headers)
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # 応答はヘッダとボディを 1 回で書く（transport.cycle）
            self.cycle.__class__ = CoalescingCycle
        self._served += 1
        if _CONNECTIONS.draining and self.cycle is not previous:
            # 受け取った最後のリクエストだけに Connection: close（先に受け取った分は全部応答する）
            if previous is not None and not previous.response_started:
                previous.keep_alive = True
            self.cycle.keep_alive = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """アプリのタスクを始め（uvicorn と同じ）、終わるまでを処理待ちの数に数える。"""
        _CONNECTIONS.in_flight += 1
        context = contextvars.Context() if self.config.reset_contextvars else None
        task = self.loop.create_task(cycle.run_asgi(app), context=context)
        task.add_done_callback(self._task_done)
        self.tasks.add(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        _CONNECTIONS.in_flight -= 1

    def on_message_complete(self) -> None:
        """受け取り終えたら期限を解除する（以後は keep-alive の期限）。"""
        self._disarm()
        super().on_message_complete()

    # --- ドレインと終了 ---

    def _idle(self) -> bool:
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def start_draining(self) -> None:
        """処理中なら応答の後に閉じ、アイドルなら短い猶予の後に閉じる。"""
        if self.transport.is_closing():
            return
        if not self._idle():
            if not self.pipeline and self.cycle is not None:
                self.cycle.keep_alive = False
            return
        self._unset_keepalive_if_required()
        grace = DRAIN_IDLE_SECONDS if self._served else FIRST_REQUEST_GRACE_SECONDS
        self.timeout_keep_alive_task = self.loop.call_later(grace, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle() and not self.transport.is_closing():
            self._close()

    @property
    def has_unparsed(self) -> bool:
        """パイプラインが多くて取っておいた受信データがあるか。"""
        return bool(self._unparsed)

    def on_response_complete(self) -> None:
        """次のリクエストを始めるか keep-alive の期限を掛け（uvicorn と同じ手順、期限は接続の
        タイマーで）、取っておいた受信データを続けて処理する。ドレイン中は猶予の後に閉じる。"""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._arm(self.timeout_keep_alive)
        if self._unparsed and len(self.pipeline) < MAX_PIPELINED:
            data, self._unparsed = self._unparsed, memoryview(b"")
            self._consume(data)
            if not self._unparsed and not self.pipeline:
                self.flow.resume_reading()
        if _CONNECTIONS.draining and self._idle() and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                DRAIN_IDLE_SECONDS, self._close_if_idle
            )

    def shutdown(self) -> None:
        """終了時：まだ 1 件も受け取っていない接続は、最初のリクエストを猶予のあいだ待つ。"""
        flush_responses()  # 応答し終えた（書くのを待つ）接続を閉じる前に
        if self._served == 0 and self._idle() and not self.transport.is_closing():
            _CONNECTIONS.draining = True  # 届いたリクエストには Connection: close で応える
            self.start_draining()
            return
        super().shutdown()
