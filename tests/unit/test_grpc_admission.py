"""api.grpc_v2.admission：HTTP と共有の予算、C-core の中の待ち、上限を超えた間の割合、基準の
取り直し、channelz が読めないときの退避。時刻は perf_counter を差し替えて進める。"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from model_in_image.api.grpc_v2 import admission
from model_in_image.api.grpc_v2.admission import IDLE_SECONDS, SAMPLE_SECONDS, Admission
from model_in_image.metrics import Metrics
from model_in_image.state import ServerState
from model_in_image.transport.connections import requests_in_flight

LIMIT = 4


class Clock:
    """admission.perf_counter の代わり（進めた分だけ進む）。"""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Core:
    """C-core の「始まって終わっていない RPC」の数の代わり（読んだ回数も数える）。"""

    def __init__(self) -> None:
        self.calls = 0
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.calls


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(admission, "perf_counter", fake)
    return fake


@pytest.fixture
def state() -> ServerState:
    return ServerState(
        model_name="iris_svc", metrics=Metrics(model_name="iris_svc", model_sha256="0", version="1")
    )


def decide(gate: Admission, count: int = 1) -> list[bool]:
    """grpc.aio と同じく RPC ごとのタスクの中で引く（次を引く前にそのタスクは終わる）。"""

    async def one() -> bool:
        return gate.admit()

    async def run() -> list[bool]:
        return [await asyncio.create_task(one()) for _ in range(count)]

    return asyncio.run(run())


def rejected(state: ServerState) -> int:
    assert state.metrics is not None
    return state.metrics.rejected_grpc


def test_admits_below_the_limit_and_rejects_at_it_without_the_core(
    state: ServerState, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """channelz なし：判断は処理待ち（HTTP + gRPC）だけ。上限以上は断って数える。"""
    gate = Admission(LIMIT, state)
    monkeypatch.setattr(admission, "requests_in_flight", lambda: LIMIT - 1)
    assert decide(gate) == [True]
    monkeypatch.setattr(admission, "requests_in_flight", lambda: LIMIT)
    assert decide(gate, 2) == [False, False]
    assert rejected(state) == 2
    assert gate.message == f"server is overloaded ({LIMIT} requests in flight); retry later"


def test_http_requests_take_from_the_same_budget(state: ServerState, clock: Clock) -> None:
    """受け入れた RPC はタスクが終わるまで処理待ち（HTTP と同じ数）に入り、その後は抜ける。"""
    gate = Admission(LIMIT, state)
    results: list[bool] = []
    release = asyncio.Event()

    async def rpc() -> None:
        results.append(gate.admit())
        await release.wait()

    async def run() -> tuple[int, int, int]:
        before = requests_in_flight()
        tasks = [asyncio.create_task(rpc()) for _ in range(LIMIT + 2)]
        await asyncio.sleep(0)
        during, active = requests_in_flight() - before, gate.active
        release.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(0)  # done コールバック
        return during, active, requests_in_flight() - before + gate.active

    during, active, after = asyncio.run(run())
    assert results == [True] * LIMIT + [False] * 2
    assert (during, active, after) == (LIMIT, LIMIT, 0)
    assert rejected(state) == 2


def test_waiting_in_the_core_counts_and_a_share_is_admitted(
    state: ServerState, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C-core の中の待ちも数える。上限を超えている間は limit / 待ち の割合だけ受け入れる
    （全部断ると、次の RPC がすぐ続く洪水では何も処理できない）。"""
    monkeypatch.setattr(admission, "requests_in_flight", lambda: 0)
    core = Core()
    gate = Admission(LIMIT, state)
    gate.watch_core(core)
    core.calls = 1  # C-core の数は今引いている 1 件を含む
    assert decide(gate) == [True]  # 最初の 1 件で基準を取る（待ちは 0）
    core.calls = 4 * LIMIT + 1  # 今引いている 1 件を除いて 4 × LIMIT が待っている
    clock.now += SAMPLE_SECONDS
    decisions = decide(gate, 400)
    assert gate.waiting == 4 * LIMIT
    assert sum(decisions) == 100  # limit / total = 1/4
    assert rejected(state) == 300
    assert core.reads == 2  # 読み直しは SAMPLE_SECONDS に 1 回


def test_no_share_when_python_itself_is_full(
    state: ServerState, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "requests_in_flight", lambda: LIMIT)
    core = Core()
    gate = Admission(LIMIT, state)
    gate.watch_core(core)
    core.calls = 100
    assert not any(decide(gate, 50))


def test_the_baseline_is_taken_again_after_an_idle_gap(
    state: ServerState, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C-core が自分で断った RPC は終わったと数えない：静かな間の後の値を 0 件と見なす。"""
    monkeypatch.setattr(admission, "requests_in_flight", lambda: 0)
    core = Core()
    gate = Admission(LIMIT, state)
    gate.watch_core(core)
    core.calls = 1000 + 1  # 数え残り 1000 と今の 1 件
    assert decide(gate) == [True]
    assert gate.waiting == 0
    clock.now += IDLE_SECONDS / 10
    core.calls = 1000 + 1 + LIMIT  # 待ちが LIMIT 件増えた：基準からの差で数える
    clock.now += SAMPLE_SECONDS
    decide(gate)
    assert gate.waiting == LIMIT
    clock.now += 2 * IDLE_SECONDS  # 静かな間の後：取り直す
    assert decide(gate) == [True]
    assert gate.waiting == 0


def test_a_failing_core_reader_falls_back_to_python_counts(
    state: ServerState, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> int:
        raise KeyError("server")

    gate = Admission(LIMIT, state)
    gate.watch_core(broken)
    with caplog.at_level(logging.ERROR, logger=admission.__name__):
        assert decide(gate) == [True]
        clock.now += IDLE_SECONDS
        assert decide(gate) == [True]
    assert len(caplog.records) == 1  # 1 度だけ記録して以後は読まない
    assert gate.waiting == 0


def test_channelz_reader_sees_calls_of_a_live_server() -> None:
    """本物の grpc.aio サーバーの channelz の計数（127.0.0.1、呼び出しは 1 つ）。"""

    async def run() -> tuple[int, int]:
        others = admission.server_ids()
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            (server_id,) = admission.server_ids() - others
            read = admission.core_calls_reader(server_id)
            idle = read()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                method = channel.unary_unary("/x.Y/Z")
                with pytest.raises(grpc.aio.AioRpcError):  # 無いメソッド：UNIMPLEMENTED
                    await method(b"", timeout=5.0)
            return idle, read()
        finally:
            await server.stop(None)

    idle, after = asyncio.run(run())
    assert idle == 0
    assert after == 0  # 始まった 1 件は終わったと数えられる


def test_an_expensive_core_read_is_repeated_less_often(
    state: ServerState, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """channelz の 1 回の読みは接続の数とともに重くなる：間隔は読んだ時間の COST_FACTOR 倍以上。"""
    monkeypatch.setattr(admission, "requests_in_flight", lambda: 0)
    cost = 0.002  # 64 接続で測った 1 回の読みと同じ桁

    class SlowCore(Core):
        def __call__(self) -> int:
            clock.now += cost
            return super().__call__()

    core = SlowCore()
    gate = Admission(LIMIT, state)
    gate.watch_core(core)
    core.calls = 1
    decide(gate)
    for _ in range(50):  # SAMPLE_SECONDS ごとに RPC が来ても、読みは間隔が過ぎるまで待つ
        clock.now += SAMPLE_SECONDS
        decide(gate)
    elapsed = 50 * SAMPLE_SECONDS + core.reads * cost
    assert core.reads <= 1 + elapsed / (admission.COST_FACTOR * cost)
    assert core.reads >= 2  # 読み直しは続く
