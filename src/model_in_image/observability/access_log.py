"""アクセスログ：1 リクエスト 1 行をディスパッチャが書く（uvicorn のアクセスログは使わない）。

logging の LogRecord・Formatter・Handler を通さず行を直接組み立て、4 KiB までまとめて
1 回の write で書く（残りはライフスパンのタイマーが 0.2 秒ごとに書き出す）。4 KiB 以下の
write はパイプでほかのワーカーの行と混ざらない（PIPE_BUF）。形式は LOG_FORMAT と同じ
（TEXT は logconfig の書式、JSON は time・level・logger・message を持つ 1 行 1 オブジェクト）。
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection
from typing import IO, Any

import orjson

from model_in_image.observability.request_id import Exchange
from model_in_image.settings import LogFormat

LOGGER_NAME = "model_in_image.access"
CHUNK_BYTES = 4096


def client_of(scope: Any) -> str:
    """接続元（host:port、不明なら -）。"""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def path_of(scope: Any) -> str:
    """受け取ったままのパス（パーセント符号化を解かない：改行などの制御文字は入らない）。"""
    raw = scope.get("raw_path")
    if raw is None:
        raw = scope["path"].encode("utf-8")
    return str(raw.decode("ascii", "backslashreplace"))


class AccessLog:
    """アクセスログの書き手（イベントループのスレッドだけが使う）。"""

    def __init__(
        self,
        fmt: LogFormat,
        *,
        stream: IO[bytes] | None = None,
        quiet_routes: Collection[str] = (),
    ) -> None:
        self.json = fmt is LogFormat.JSON
        self.stream = stream if stream is not None else sys.stdout.buffer
        # 成功した応答を書かないルート（プローブ。4xx・5xx は書く）
        self.quiet_routes = frozenset(quiet_routes)
        self._pending: list[bytes] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
        self._pid = os.getpid()

    def record(self, exchange: Exchange, route: str, status: int, seconds: float) -> None:
        """1 リクエストを書く（まとめて書き出す）。status は実際に送ったもの。"""
        if status < 400 and route in self.quiet_routes:
            return
        if self.json:
            line = self._json_line(exchange, route, status, seconds)
        else:
            line = self._text_line(exchange, status, seconds)
        if self._size + len(line) > CHUNK_BYTES:
            self.flush()
        self._pending.append(line)
        self._size += len(line)

    def flush(self) -> None:
        """まとめた行を書き出す（書けなくてもリクエストには影響させない）。"""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # 出力先が閉じた・壊れた（終了の間際など）
            pass

    def _time(self) -> str:
        """logging の既定と同じ形の時刻（2026-11-28 10:11:12,345、地方時）。秒の部分は使い回す。"""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"

    def _text_line(self, exchange: Exchange, status: int, seconds: float) -> bytes:
        scope = exchange.scope
        trace = f" trace_id={exchange.trace_id}" if exchange.trace_id else ""
        return (
            f"{self._time()} INFO [{LOGGER_NAME}] [request_id={exchange.request_id}] "
            f'{client_of(scope)} "{scope["method"]} {path_of(scope)}" {status} {exchange.sent}B '
            f"{seconds * 1000:.2f}ms{trace}\n"
        ).encode("utf-8", "backslashreplace")

    def _json_line(self, exchange: Exchange, route: str, status: int, seconds: float) -> bytes:
        scope = exchange.scope
        method = scope["method"]
        path = path_of(scope)
        return orjson.dumps(
            {
                "time": self._time(),
                "level": "INFO",
                "logger": LOGGER_NAME,
                "message": f"{method} {path} {status}",
                "process": self._pid,
                "request_id": exchange.request_id,
                "trace_id": exchange.trace_id,
                "method": method,
                "route": route,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "bytes": exchange.sent,
                "client": client_of(scope),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
