"""predict の進み具合：端末なら tqdm のバー、大きさの分からない端末やパイプなら定期的な 1 行。"""

from __future__ import annotations

import os
import sys
import time
from enum import StrEnum
from types import TracebackType
from typing import IO, Any, Protocol

from tqdm import tqdm

# 定期的な 1 行の間隔（秒）
LINE_INTERVAL_SECONDS = 10.0


class ProgressMode(StrEnum):
    """進み具合の出し方。"""

    OFF = "off"
    BAR = "bar"
    LINES = "lines"


def choose_mode(forced: bool | None, stream: IO[str]) -> ProgressMode:
    """--progress/--no-progress（None は自動）と標準エラーから出し方を決める。

    自動では端末のときだけ出す。大きさの分かる端末ならバー、分からなければ定期的な 1 行。
    --progress は端末でなくても定期的な 1 行を出す。
    """
    if forced is False:
        return ProgressMode.OFF
    if terminal_columns(stream) > 0:
        return ProgressMode.BAR
    if forced or stream.isatty():
        return ProgressMode.LINES
    return ProgressMode.OFF


def terminal_columns(stream: IO[str]) -> int:
    """端末の幅（端末でない・大きさが分からなければ 0）。"""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (OSError, ValueError, AttributeError):
        return 0


class Progress(Protocol):
    """読んだ位置と推論した行数を受け取る進み具合。"""

    def advance(self, position: int, rows: int) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class BarProgress:
    """tqdm のバー（ファイルならバイト、Parquet なら行）。"""

    def __init__(self, total: int | None, unit: str, *, enabled: bool) -> None:
        scale: dict[str, Any] = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
        self._bar = tqdm(
            total=total,
            unit=unit,
            disable=not enabled,
            file=sys.stderr,
            desc="predict",
            **scale,
        )

    def advance(self, position: int, rows: int) -> None:
        self._bar.update(position - self._bar.n)
        self._bar.set_postfix_str(f"{rows:,} rows", refresh=False)

    def __enter__(self) -> BarProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.close()


class LineProgress:
    """大きさの分からない端末・パイプ向け：interval 秒ごとと最後に 1 行を標準エラーへ。"""

    def __init__(self, total: int | None, unit: str, interval: float) -> None:
        self._total = total
        self._unit = unit
        self._interval = interval
        self._started = self._last = time.monotonic()
        self._position = self._rows = 0

    def advance(self, position: int, rows: int) -> None:
        self._position, self._rows = position, rows
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        share = f" ({100 * self._position / self._total:.0f}%)" if self._total else ""
        print(
            f"predict progress: {self._rows:,} rows{share}, {now - self._started:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self._print(time.monotonic())


def open_progress(
    mode: ProgressMode, total: int | None, unit: str, interval: float = LINE_INTERVAL_SECONDS
) -> Progress:
    """出し方に合う進み具合（OFF は何も出さないバー）。"""
    if mode is ProgressMode.LINES:
        return LineProgress(total, unit, interval)
    return BarProgress(total, unit, enabled=mode is ProgressMode.BAR)
