"""このプロセスの HTTP 接続の状態：生きている接続・ドレイン・処理待ちの数、壊れたリクエストのログ。

接続の実装（transport.connection）と受け入れ制御（HTTP と gRPC）が共有する。
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

# 壊れたリクエストの WARNING は間隔ごとに 1 行（ログを増幅させない）
MALFORMED_LOG_INTERVAL_SECONDS = 10.0


class _Connections:
    """このプロセスの接続とドレインの状態（シグナルはプロセス単位なのでここもプロセス単位）。"""

    def __init__(self) -> None:
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()
        self.draining = False
        # アプリに渡したが終わっていないリクエストの数（実行待ちを含む）
        self.in_flight = 0


CONNECTIONS = _Connections()


def begin_drain() -> None:
    """ドレインを始める：以後の応答は Connection: close、アイドルの接続は猶予の後に閉じる。"""
    CONNECTIONS.draining = True
    for connection in list(CONNECTIONS.live):
        connection.start_draining()


def reset_drain() -> None:
    """ドレインの状態を戻す（同じプロセスでサーバーを起動し直すとき）。"""
    CONNECTIONS.draining = False


def requests_in_flight() -> int:
    """このプロセスの処理待ちの数（HTTP と gRPC の合計：受け入れ制御の予算は両方で共有）。"""
    return CONNECTIONS.in_flight


def count_in_flight(task: asyncio.Task[Any]) -> None:
    """HTTP の外のリクエスト（gRPC の RPC）を、そのタスクが終わるまで処理待ちの数に数える。"""
    CONNECTIONS.in_flight += 1
    task.add_done_callback(_uncount)


def _uncount(task: asyncio.Task[Any]) -> None:
    CONNECTIONS.in_flight -= 1


class MalformedLog:
    """壊れたリクエストの WARNING を間隔ごとに 1 行に抑える（その間の件数を数える）。"""

    def __init__(self, interval: float = MALFORMED_LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.suppressed = 0
        self._next_at = 0.0

    def warn(self, logger: logging.Logger, detail: str) -> None:
        """間隔の初めの 1 件だけを書き、残りは数える。"""
        now = time.monotonic()
        if now < self._next_at:
            self.suppressed += 1
            return
        count, self.suppressed = self.suppressed + 1, 0
        self._next_at = now + self.interval
        logger.warning(
            "malformed request answered 400: %s (%d since the last such line; "
            "at most one line per %.0f s)",
            detail,
            count,
            self.interval,
        )


MALFORMED = MalformedLog()


class Rejected(Exception):  # noqa: N818 - 応答で終わるので誤りではない
    """受信中に見つけた規則違反（この応答を返して接続を閉じる）。"""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


REASONS = {
    400: b"Bad Request",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}
