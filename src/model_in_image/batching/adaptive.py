"""適応バッチ：モデルが動いている間に来たリクエストを 1 回の推論にまとめる（ワーカーごとに 1 つ）。

- モデルが空いていて遅延が 0 なら、来たリクエストはすぐに実行する（タイマーで待たない）。
- 動いている間に来たリクエストは待ち行列に積み、推論が終わったら同じ鍵（入力の形・dtype・
  求める出力）のものを先着順に最大 max_rows 行まとめる。1 件で max_rows を超えるものは単独で。
- 遅延が 0 より大きければ、バッチは最初のリクエストが着いた時から最長 delay 秒だけ仲間を待つ
  （行が満ちれば待たない。ドレインが始まれば待たない）。
- 推論はモデル専用のスレッド 1 本で行う（ONNX Runtime は GIL を放す：その間もイベントループは
  次のリクエストを解析する）。状態を触るのはイベントループのスレッドだけ。
- ただし遅延 0 でモデルが空き、このプロセスの処理待ちがこのリクエストだけ（in_flight() ≤ 1）で、
  直前の推論が仲間なしの 1 件だった（静か）なら、イベントループの上でその場で実行する：解析を待つ
  相手がいないのでスレッドへの受け渡し（重い MLP の c=1 で p50 0.27 → 0.34 ms）を払わない。
  待ち行列に積まれたら静かでなくなり、仲間なしの 1 件の推論が終わるまでその場では実行しない
  （混んだ周回の最後の 1 件がループを止めてバッチを崩さない）。
- まとめた推論が失敗したら 1 件ずつやり直す（誤りは原因のリクエストだけに返る）。出力の行数が
  入力と合わないモデル（行ごとの出力でない）なら、以後はまとめない。
- 待ち行列は max_queue 件まで。満ちていれば OverloadedError（503 / RESOURCE_EXHAUSTED）ですぐ断る。
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import Any, Protocol

from model_in_image.batching.merge import Key, RowCountMismatchError, key_of, merge, split
from model_in_image.errors import NotReadyError, OverloadedError
from model_in_image.model.onnx_model import Feeds

logger = logging.getLogger(__name__)

# グラフを実行する関数（OnnxModel.run）：入力と求める出力の名前（None は全部）→ 出力の列
RunModel = Callable[[Feeds, list[str] | None], list[Any]]


class BatchObserver(Protocol):
    """バッチの観測（metrics.Metrics が満たす）。"""

    def observe_inference(self, rows: int, seconds: float) -> None:
        """推論 1 回の行数と時間。"""

    def observe_batch(self, requests: int, waits: Sequence[float]) -> None:
        """推論 1 回にまとめたリクエストの数と、各リクエストの待ち時間（秒）。"""


@dataclass(slots=True, eq=False)
class _Pending:
    """モデルを待つリクエスト 1 件。"""

    feeds: Feeds
    names: list[str] | None
    key: Key
    rows: int
    arrived: float
    future: asyncio.Future[list[Any]]
    alone: bool = False  # 1 件だけで実行する（まとめた推論が失敗した後のやり直し）


def _timed(run: RunModel, parts: list[Feeds], names: list[str] | None) -> tuple[list[Any], float]:
    """モデルのスレッドで：入力をつないで推論し、(出力, 推論の秒) を返す。"""
    feeds = merge(parts)
    start = perf_counter()
    outputs = run(feeds, names)
    return outputs, perf_counter() - start


class AdaptiveBatcher:
    """検証済みのリクエストをまとめて推論する待ち行列（イベントループの上で使う）。"""

    def __init__(
        self,
        run: RunModel,
        *,
        max_rows: int,
        delay: float,
        max_queue: int,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.max_rows = max_rows
        # このプロセスの処理待ちの数（None ならいつもモデルのスレッドで実行する）
        self._in_flight = in_flight
        self._quiet = True  # 直前の推論が仲間なしの 1 件（その場で実行してよい）
        self.delay = delay
        self.max_queue = max_queue
        self.observer: BatchObserver | None = None
        self._run = run
        self._pending: deque[_Pending] = deque()
        self._busy = False
        self._merging = True
        self._draining = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-batch")

    @property
    def waiting(self) -> int:
        """モデルを待っているリクエストの数（実行中のバッチを除く）。"""
        return len(self._pending)

    async def run(self, feeds: Feeds, names: list[str] | None) -> list[Any]:
        """検証済みの入力を推論し、このリクエストの行だけの出力を返す（グラフの出力の順）。"""
        if self._closed:
            raise NotReadyError("the model is shutting down")
        if len(self._pending) >= self.max_queue:
            raise OverloadedError(
                f"batch queue is full ({self.max_queue} requests waiting for the model); "
                "retry later"
            )
        rows = len(next(iter(feeds.values())))
        if self._alone_and_idle():
            return self._run_here(feeds, names, rows)
        if self._busy or self._pending:
            self._quiet = False
        loop = asyncio.get_running_loop()
        item = _Pending(feeds, names, key_of(feeds, names), rows, loop.time(), loop.create_future())
        self._pending.append(item)
        self._schedule(loop)
        return await item.future

    def _alone_and_idle(self) -> bool:
        """静かで、モデルが空き、待ちも無く、遅延 0（かドレイン中）で、ほかに処理待ちが無い。"""
        return (
            self._in_flight is not None
            and self._quiet
            and not self._busy
            and not self._pending
            and (not self.delay or self._draining)
            and self._in_flight() <= 1
        )

    def _run_here(self, feeds: Feeds, names: list[str] | None, rows: int) -> list[Any]:
        """イベントループの上でその場で推論する（1 件のバッチとして数える：スレッドの経路と同じく
        バッチは実行の前に、推論は成功したときだけ記録する）。"""
        if self.observer is not None:
            self.observer.observe_batch(1, [0.0])
        outputs, seconds = _timed(self._run, [feeds], names)
        if self.observer is not None:
            self.observer.observe_inference(rows, seconds)
        return outputs

    def drain(self) -> None:
        """ドレイン：以後は仲間を待たずに実行する（イベントループの上で呼ぶ）。"""
        self._draining = True
        self._schedule(asyncio.get_running_loop())

    async def close(self) -> None:
        """待ち行列と実行中のバッチを終えてから止める（何も落とさない）。"""
        loop = asyncio.get_running_loop()
        self._draining = True
        self._schedule(loop)
        if self._busy or self._pending:
            waiter = loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter
        self._closed = True
        self._executor.shutdown(wait=False)

    def _schedule(self, loop: asyncio.AbstractEventLoop, expired: float = 0.0) -> None:
        """モデルが空いていれば次のバッチを始める（遅延があれば期限まで仲間を待つ）。"""
        if self._busy:
            return
        pending = self._pending
        while pending and pending[0].future.done():  # 待つ間に取り消されたもの
            pending.popleft()
        if not pending:
            self._cancel_timer()
            self._wake_idle()
            return
        head = pending[0]
        if self.delay and not self._draining and not head.alone:
            deadline = head.arrived + self.delay
            now = max(loop.time(), expired)
            if now < deadline and self._company(head) < self.max_rows:
                self._wait_until(loop, deadline)
                return
        self._cancel_timer()
        self._start(loop, self._take(head))

    def _company(self, head: _Pending) -> int:
        """head とまとめられる待ちの行数（max_rows に届いたところで数えるのをやめる）。"""
        rows = 0
        for item in self._pending:
            if item.key == head.key and not item.alone and not item.future.done():
                rows += item.rows
                if rows >= self.max_rows:
                    break
        return rows

    def _take(self, head: _Pending) -> list[_Pending]:
        """待ち行列から head と同じ鍵のものを先着順に max_rows 行まで取り出す。"""
        if head.alone or not self._merging:
            self._pending.popleft()
            return [head]
        batch: list[_Pending] = []
        rest: deque[_Pending] = deque()
        rows, full = 0, False
        for item in self._pending:
            if item.future.done():
                continue
            if full or item.alone or item.key != head.key:
                rest.append(item)
            elif batch and rows + item.rows > self.max_rows:
                full = True  # 先着順を守る：入らないものの後ろは次のバッチへ
                rest.append(item)
            else:
                batch.append(item)
                rows += item.rows
                full = rows >= self.max_rows
        self._pending = rest
        return batch

    def _start(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """バッチをモデルのスレッドで実行する。"""
        self._busy = True
        if self.observer is not None:
            now = loop.time()
            waits = [now - item.arrived for item in batch if not item.alone]
            self.observer.observe_batch(len(batch), waits)
        parts = [item.feeds for item in batch]
        running = loop.run_in_executor(self._executor, _timed, self._run, parts, batch[0].names)
        running.add_done_callback(partial(self._finished, loop, batch))

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Pending],
        running: asyncio.Future[tuple[list[Any], float]],
    ) -> None:
        """バッチの結果を各リクエストに返し、次のバッチを始める。"""
        self._busy = False
        try:
            outputs, seconds = running.result()
        except Exception as exc:
            self._failed(batch, exc)
        else:
            if self.observer is not None:
                self.observer.observe_inference(sum(item.rows for item in batch), seconds)
            self._deliver(batch, outputs)
        if len(batch) == 1 and not self._pending:
            self._quiet = True
        self._schedule(loop)

    def _deliver(self, batch: list[_Pending], outputs: list[Any]) -> None:
        if len(batch) == 1:
            _resolve(batch[0], outputs)
            return
        try:
            pieces = split(outputs, [item.rows for item in batch])
        except RowCountMismatchError as exc:
            logger.warning("adaptive batching turned off for this model: %s", exc)
            self._merging = False
            self._retry_alone(batch)
            return
        for item, piece in zip(batch, pieces, strict=True):
            _resolve(item, piece)

    def _failed(self, batch: list[_Pending], exc: Exception) -> None:
        """単独なら誤りを返す。まとめたものなら 1 件ずつやり直す（悪いものだけが失敗する）。"""
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self._retry_alone(batch)

    def _retry_alone(self, batch: list[_Pending]) -> None:
        for item in reversed(batch):
            if not item.future.done():
                item.alone = True
                self._pending.appendleft(item)

    def _wait_until(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        timer = self._timer
        if timer is not None and timer.when() == deadline:
            return
        self._cancel_timer()
        self._timer = loop.call_at(deadline, self._expire, loop, deadline)

    def _expire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._timer = None
        self._schedule(loop, expired=deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _resolve(item: _Pending, outputs: list[Any]) -> None:
    if not item.future.done():  # 待つ間にクライアントが去った（取り消し）なら捨てる
        item.future.set_result(outputs)
