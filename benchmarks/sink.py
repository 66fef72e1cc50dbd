"""127.0.0.1 の小さな HTTP の受け口（OTLP/HTTP のスパンや予測ログの送り先）。

ベンチマークでは「トレースあり」の variant の OTEL_EXPORTER_OTLP_ENDPOINT に使い（受けて捨てる）、
テストでは受け取った本文を調べる（keep=True）・応答を止めて送り先の詰まりを作る（hold()）。
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

HOST = "127.0.0.1"
HOLD_LIMIT_SECONDS = 30.0


@dataclass(frozen=True)
class Received:
    """受け取った POST 1 件。"""

    path: str
    content_type: str
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: LocalSink


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        """本文を読み、受け口が止められていれば開くまで待ってから 200 を返す。"""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sink = self.server.sink
        sink.record(Received(self.path, self.headers.get("Content-Type", ""), body))
        sink.released.wait(HOLD_LIMIT_SECONDS)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """1 リクエストごとの標準エラーへの出力はしない。"""


class LocalSink:
    """POST を受ける HTTP サーバー（別スレッド）。with 文で起動・停止する。"""

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep
        self.bodies: list[Received] = []
        self.requests = 0
        self.received = threading.Condition()
        self.released = threading.Event()
        self.released.set()
        self._server = _Server((HOST, 0), _Handler)
        self._server.sink = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{HOST}:{self._server.server_address[1]}"

    def record(self, received: Received) -> None:
        """受け取った POST を数える（keep なら本文も残す）。"""
        with self.received:
            self.requests += 1
            if self.keep:
                self.bodies.append(received)
            self.received.notify_all()

    def wait_for(self, requests: int, timeout: float) -> bool:
        """requests 件を受け取るまで待つ（時間切れなら False）。"""
        with self.received:
            return self.received.wait_for(lambda: self.requests >= requests, timeout)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """この間は応答しない（送り先が詰まった状態）。"""
        self.released.clear()
        try:
            yield
        finally:
            self.released.set()

    def __enter__(self) -> LocalSink:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
