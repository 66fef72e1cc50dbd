"""AdaptiveBatcher：まとめ方・分け方・遅延・待ち行列の上限・やり直し・ドレイン（モデルは偽物）。

時間の上限は緩い（遅いマシンで落ちない）。順序はモデルを止めておく gate で決める。
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
import pytest

from model_in_image.batching.adaptive import AdaptiveBatcher
from model_in_image.batching.merge import RowCountMismatchError, key_of, split
from model_in_image.errors import NotReadyError, OverloadedError

WAIT = 10.0  # これより長く待つことは無い（壊れたときに止まらないための上限）


class FakeModel:
    """行ごとの出力 2 つ（x * 2 と ZipMap 風の辞書）を返す。gate が閉じていれば実行中で止まる。"""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def run(self, feeds: dict[str, Any], names: list[str] | None) -> list[Any]:
        x = feeds["x"]
        self.calls.append(len(x))
        self.started.set()
        assert self.gate.wait(WAIT)
        if (x < 0).any():
            raise ValueError("negative input")
        return [x * 2, [{"v": float(row[0])} for row in x]]


class Recorder:
    """BatchObserver：観測値を記録する。"""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.inferences: list[int] = []

    def observe_inference(self, rows: int, seconds: float) -> None:
        assert seconds >= 0
        self.inferences.append(rows)

    def observe_batch(self, requests: int, waits: Sequence[float]) -> None:
        assert all(w >= 0 for w in waits)
        self.batches.append((requests, len(waits)))


def feeds(*values: float, width: int = 1) -> dict[str, Any]:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), WAIT * 2))


async def busy(model: FakeModel, batcher: AdaptiveBatcher) -> asyncio.Task[list[Any]]:
    """モデルを実行中にしておく（gate を閉じて 1 件目を走らせる）。"""
    model.gate.clear()
    model.started.clear()
    first = asyncio.create_task(batcher.run(feeds(100.0), None))
    await asyncio.to_thread(model.started.wait, WAIT)
    return first


async def queued(batcher: AdaptiveBatcher, *requests: dict[str, Any]) -> list[asyncio.Task[Any]]:
    tasks = [asyncio.create_task(batcher.run(f, None)) for f in requests]
    await asyncio.sleep(0)  # 各タスクが待ち行列に入るまで
    return tasks


def make(model: FakeModel, **kwargs: Any) -> AdaptiveBatcher:
    options: dict[str, Any] = {"max_rows": 64, "delay": 0.0, "max_queue": 100, **kwargs}
    return AdaptiveBatcher(model.run, **options)


def test_lone_request_runs_at_once_without_a_delay() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        task = asyncio.create_task(batcher.run(feeds(1.0), None))
        await asyncio.sleep(0)
        assert batcher.waiting == 0  # 待ち行列に残らず、もう実行に入った
        outputs = await task
        np.testing.assert_array_equal(outputs[0], [[2.0]])
        assert model.calls == [1]

    run(scenario)


def test_requests_arriving_while_busy_are_merged_and_split_exactly() -> None:
    async def scenario() -> None:
        model, recorder = FakeModel(), Recorder()
        batcher = make(model)
        batcher.observer = recorder
        first = await busy(model, batcher)
        parts = [feeds(1.0), feeds(2.0, 3.0), feeds(4.0), feeds(5.0, 6.0, 7.0), feeds(8.0)]
        tasks = await queued(batcher, *parts)
        assert batcher.waiting == len(parts)
        model.gate.set()
        await first
        for part, task in zip(parts, tasks, strict=True):
            values, dicts = await task
            np.testing.assert_array_equal(values, part["x"] * 2)  # 各自の行だけ、順も同じ
            assert [d["v"] for d in dicts] == part["x"][:, 0].tolist()
        assert model.calls == [1, 8]
        assert recorder.batches == [(1, 1), (5, 5)]
        assert recorder.inferences == [1, 8]

    run(scenario)


def test_batches_are_capped_in_rows_and_a_large_request_runs_alone() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_rows=4)
        first = await busy(model, batcher)
        big = feeds(*range(10))
        tasks = await queued(batcher, feeds(1, 2), feeds(3, 4), big, feeds(5))
        model.gate.set()
        await first
        results = [await task for task in tasks]
        np.testing.assert_array_equal(results[2][0], big["x"] * 2)
        assert model.calls == [1, 4, 10, 1]

    run(scenario)


def test_only_requests_with_the_same_shape_dtype_and_outputs_are_merged() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(model, batcher)
        wide = asyncio.create_task(batcher.run(feeds(1.0, width=2), None))
        named = asyncio.create_task(batcher.run(feeds(2.0), ["a"]))
        as_f64 = asyncio.create_task(batcher.run({"x": np.array([[3.0]])}, None))
        same = await queued(batcher, feeds(4.0), feeds(5.0))
        model.gate.set()
        await asyncio.gather(first, wide, named, as_f64, *same)
        assert sorted(model.calls) == [1, 1, 1, 1, 2]

    run(scenario)


def test_a_failing_batch_is_rerun_one_by_one_so_only_the_bad_request_fails() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(model, batcher)
        tasks = await queued(batcher, feeds(1.0), feeds(-1.0), feeds(2.0, 3.0))
        model.gate.set()
        await first
        good, bad, other = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(bad, ValueError)
        np.testing.assert_array_equal(good[0], [[2.0]])  # type: ignore[index]
        np.testing.assert_array_equal(other[0], [[4.0], [6.0]])  # type: ignore[index]
        assert model.calls == [1, 4, 1, 1, 2]

    run(scenario)


def test_a_model_whose_output_rows_differ_is_no_longer_batched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Summing(FakeModel):
        def run(self, feeds: dict[str, Any], names: list[str] | None) -> list[Any]:
            super().run(feeds, names)
            return [feeds["x"].sum(axis=0, keepdims=True)]  # 行ごとの出力ではない

    async def scenario() -> None:
        model = Summing()
        batcher = make(model)
        first = await busy(model, batcher)
        tasks = await queued(batcher, feeds(1.0, 2.0), feeds(3.0))
        model.gate.set()
        await first
        sums = [(await task)[0].tolist() for task in tasks]
        assert sums == [[[3.0]], [[3.0]]]  # 単独で実行した値
        first = await busy(model, batcher)
        later = await queued(batcher, feeds(1.0), feeds(2.0))
        model.gate.set()
        await asyncio.gather(first, *later)
        assert model.calls == [1, 3, 2, 1, 1, 1, 1]

    with caplog.at_level(logging.WARNING):
        run(scenario)
    assert "adaptive batching turned off for this model" in caplog.text
    assert "returned 1 rows for 3 input rows" in caplog.text


def test_a_delay_waits_for_company_but_no_longer_than_the_delay() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, delay=0.3)
        start = time.monotonic()
        lone = asyncio.create_task(batcher.run(feeds(1.0), None))
        await asyncio.sleep(0.05)
        company = asyncio.create_task(batcher.run(feeds(2.0), None))
        await asyncio.gather(lone, company)
        elapsed = time.monotonic() - start
        assert model.calls == [2]  # 期限までに来た仲間とまとめて 1 回
        assert 0.25 <= elapsed < 5.0  # タイマーは最初のリクエストが着いた時から

    run(scenario)


def test_a_full_batch_does_not_wait_for_the_delay() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_rows=4, delay=60.0)
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.run(feeds(float(i)), None) for i in range(4))), WAIT
        )
        assert len(results) == 4
        assert model.calls == [4]

    run(scenario)


def test_a_full_queue_refuses_at_once() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_queue=2)
        first = await busy(model, batcher)
        tasks = await queued(batcher, feeds(1.0), feeds(2.0))
        with pytest.raises(OverloadedError, match="batch queue is full"):
            await batcher.run(feeds(3.0), None)
        model.gate.set()
        await asyncio.gather(first, *tasks)

    run(scenario)


def test_drain_runs_waiting_requests_without_the_delay() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, delay=60.0)
        tasks = await queued(batcher, feeds(1.0), feeds(2.0), feeds(3.0))
        batcher.drain()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        assert model.calls == [3]

    run(scenario)


def test_close_finishes_the_batch_in_flight_and_the_queue() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, delay=60.0)
        model.gate.clear()
        tasks = await queued(batcher, feeds(1.0), feeds(2.0))
        closing = asyncio.create_task(batcher.close())  # 遅延を待たずに実行を始める
        await asyncio.to_thread(model.started.wait, WAIT)
        assert not closing.done()  # 実行中のバッチを待つ
        model.gate.set()
        await closing
        assert all(task.done() and not task.cancelled() for task in tasks)
        assert model.calls == [2]
        with pytest.raises(NotReadyError):
            await batcher.run(feeds(1.0), None)

    run(scenario)


def test_a_cancelled_request_is_dropped_from_the_queue() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(model, batcher)
        kept, dropped = await queued(batcher, feeds(1.0), feeds(2.0))
        dropped.cancel()
        model.gate.set()
        await asyncio.gather(first, kept)
        assert model.calls == [1, 1]

    run(scenario)


def test_split_checks_the_row_count() -> None:
    outputs = [np.arange(5), [{"a": 1}] * 5]
    pieces = split(outputs, [2, 3])
    assert [len(p[0]) for p in pieces] == [2, 3]
    assert [len(p[1]) for p in pieces] == [2, 3]
    with pytest.raises(RowCountMismatchError, match="4 rows for 5 input rows"):
        split([np.arange(4)], [2, 3])
    with pytest.raises(RowCountMismatchError, match="a scalar"):
        split([np.float32(1.0)], [2, 3])


def test_key_ignores_the_batch_dimension_only() -> None:
    assert key_of(feeds(1.0), None) == key_of(feeds(1.0, 2.0), None)
    assert key_of(feeds(1.0), None) != key_of(feeds(1.0, width=2), None)
    assert key_of(feeds(1.0), None) != key_of(feeds(1.0), ["a"])


class ThreadModel(FakeModel):
    """どのスレッドで実行されたかを記録する。"""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def run(self, feeds: dict[str, Any], names: list[str] | None) -> list[Any]:
        self.threads.append(threading.current_thread().name)
        return super().run(feeds, names)


@pytest.mark.parametrize(
    ("in_flight", "delay", "here"),
    [
        (1, 0.0, True),  # ほかに処理待ちが無い：その場で（スレッドへ渡さない）
        (2, 0.0, False),  # ほかのリクエストの解析を止めない：モデルのスレッドで
        (1, 0.05, False),  # 遅延があれば仲間を待つ（その場では実行しない）
        (None, 0.0, False),  # 処理待ちの数を知らない：いつもモデルのスレッド
    ],
)
def test_a_lone_request_on_an_idle_process_runs_on_the_event_loop(
    in_flight: int | None, delay: float, here: bool
) -> None:
    async def scenario() -> None:
        model, recorder = ThreadModel(), Recorder()
        counter = None if in_flight is None else (lambda: in_flight)
        batcher = make(model, delay=delay, in_flight=counter)
        batcher.observer = recorder
        values, _ = await batcher.run(feeds(1.0, 2.0), None)
        np.testing.assert_array_equal(values, [[2.0], [4.0]])
        loop_thread = threading.current_thread().name
        assert (model.threads == [loop_thread]) is here
        assert model.threads[0].startswith("model-batch") is not here
        assert recorder.batches == [(1, 1)]
        assert recorder.inferences == [2]
        await batcher.close()

    run(scenario)


def test_a_request_on_the_event_loop_that_fails_gets_its_own_error() -> None:
    async def scenario() -> None:
        model = ThreadModel()
        batcher = make(model, in_flight=lambda: 1)
        recorder = Recorder()
        batcher.observer = recorder
        with pytest.raises(ValueError, match="negative"):
            await batcher.run(feeds(-1.0), None)
        values, _ = await batcher.run(feeds(3.0), None)  # 次のリクエストは普通に答える
        np.testing.assert_array_equal(values, [[6.0]])
        assert model.threads == [threading.current_thread().name] * 2
        # スレッドの経路と同じ数え方：失敗した実行もバッチに数え、推論は成功した分だけ
        assert recorder.batches == [(1, 1), (1, 1)]
        assert recorder.inferences == [1]

    run(scenario)


def test_the_event_loop_path_is_not_taken_while_the_model_is_busy() -> None:
    async def scenario() -> None:
        model = ThreadModel()
        count = [2]  # 1 件目はほかにも処理待ちがある：スレッドで（止めておく）
        batcher = make(model, in_flight=lambda: count[0])
        model.gate.clear()
        first = asyncio.create_task(batcher.run(feeds(100.0), None))
        await asyncio.to_thread(model.started.wait, WAIT)
        count[0] = 1
        second = asyncio.create_task(batcher.run(feeds(1.0), None))
        await asyncio.sleep(0)
        assert batcher.waiting == 1  # モデルが動いている：待ち行列へ（ループでは実行しない）
        model.gate.set()
        await first
        values, _ = await second
        np.testing.assert_array_equal(values, [[2.0]])
        assert all(name.startswith("model-batch") for name in model.threads)

    run(scenario)


def test_after_company_the_event_loop_path_waits_for_a_quiet_run() -> None:
    """待ち行列に積まれた後は、仲間なしの 1 件の推論が終わるまでその場では実行しない。"""

    async def scenario() -> None:
        model = ThreadModel()
        count = [2]
        batcher = make(model, in_flight=lambda: count[0])
        first = await busy(model, batcher)
        tasks = await queued(batcher, feeds(1.0), feeds(2.0))  # 仲間がいた：静かでない
        model.gate.set()
        await first
        await asyncio.gather(*tasks)
        count[0] = 1
        await batcher.run(feeds(3.0), None)  # 直前は 2 件のバッチ：スレッドで、仲間なし
        await batcher.run(feeds(4.0), None)  # 直前が仲間なしの 1 件：その場で
        loop_thread = threading.current_thread().name
        assert [name == loop_thread for name in model.threads] == [False, False, False, True]
        assert model.calls == [1, 2, 1, 1]

    run(scenario)
