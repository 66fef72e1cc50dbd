"""進み具合の表示：大きさの分かる端末なら tqdm のバー、そうでなければ標準エラーへ定期的な 1 行。

既定（auto）は標準エラーが端末のときだけ表示する。--progress で常に、--no-progress で出さない。
"""

from __future__ import annotations

import os
import sys
import time
from enum import StrEnum
from typing import IO, Any, Protocol

from tqdm import tqdm

DEFAULT_INTERVAL_SECONDS = 10.0


class ProgressMode(StrEnum):
    """表示するか（auto：標準エラーが端末のときだけ）。"""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class Progress(Protocol):
    """進み具合の表示先。"""

    def update(self, position: int, rows: int) -> None:
        """読んだ位置（バイトまたは行）と推論した行数を伝える。"""

    def close(self) -> None:
        """表示を終える。"""


def terminal_columns(stream: IO[str]) -> int:
    """端末の幅（端末でない・大きさが分からなければ 0）。"""
    try:
        if not stream.isatty():
            return 0
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):  # 大きさを持たない端末・閉じたストリーム
        return 0


def is_terminal(stream: IO[str]) -> bool:
    """stream が端末か（閉じていれば False）。"""
    try:
        return stream.isatty()
    except ValueError:
        return False


class _Silent:
    def update(self, position: int, rows: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    """tqdm のバー（ファイルならバイト、Parquet なら行）。"""

    def __init__(self, total: int | None, unit: str, out: IO[str], desc: str) -> None:
        scaled: dict[str, Any] = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
        self._bar = tqdm(total=total, unit=unit, file=out, desc=desc, **scaled)

    def update(self, position: int, rows: int) -> None:
        self._bar.update(position - self._bar.n)
        self._bar.set_postfix_str(f"{rows:,} rows", refresh=False)

    def close(self) -> None:
        self._bar.close()


class PeriodicLine:
    """interval 秒ごとに標準エラーへ 1 行（行数・割合・行/秒）。端末の大きさが無くても読める。"""

    def __init__(
        self, total: int | None, unit: str, out: IO[str], desc: str, interval: float
    ) -> None:
        self._total = total
        self._unit = unit
        self._out = out
        self._desc = desc
        self._interval = interval
        self._started = self._last = time.monotonic()

    def update(self, position: int, rows: int) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        rate = rows / (now - self._started) if now > self._started else 0.0
        done = f", {100 * position / self._total:.0f}%" if self._total else ""
        print(f"{self._desc}: {rows:,} rows{done}, {rate:,.0f} rows/s", file=self._out, flush=True)

    def close(self) -> None:
        pass


def open_progress(
    mode: ProgressMode,
    total: int | None,
    unit: str,
    *,
    desc: str = "predict",
    interval: float = DEFAULT_INTERVAL_SECONDS,
    out: IO[str] | None = None,
) -> Progress:
    """表示の仕方を決める：端末の幅が分かればバー、分からなければ理由を書いて定期的な 1 行。"""
    out = out or sys.stderr
    if mode is ProgressMode.OFF or (mode is ProgressMode.AUTO and not is_terminal(out)):
        return _Silent()
    if terminal_columns(out) > 0:
        return _Bar(total, unit, out, desc)
    why = "standard error is not a terminal" if not is_terminal(out) else "the terminal has no size"
    print(f"{desc}: progress every {interval:g} s ({why})", file=out, flush=True)
    return PeriodicLine(total, unit, out, desc, interval)
