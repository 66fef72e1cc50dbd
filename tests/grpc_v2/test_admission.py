"""gRPC の受け入れ制御：c=200 の洪水で上限を超えた RPC はすぐ RESOURCE_EXHAUSTED（再試行の
目安付き）、断った数は rejected_total{protocol="grpc"} に数え、ヘルスは断らない。

負荷は同じプロセスの grpc.aio のクライアント（数秒で終わる）。127.0.0.1 だけ。
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from support.grpc_v2 import CALL_TIMEOUT, SERVING, typed_request
from support.prometheus import samples
from support.samples import SETOSA
from support.servers import LiveServer, running_server

MAX_IN_FLIGHT = 8
CONCURRENCY = 200
CHANNELS = 8
FLOOD_SECONDS = 3.0
REJECTED = "model_in_image_requests_rejected_total"
# 断るまでの時間の上限（秒）：断る RPC は本文を読まずに答える。機械が混んでいても十分な幅
REJECT_LIMIT = 1.0
PROBE_LIMIT = 1.0


@dataclass
class Flood:
    """洪水の結果：状態コードごとの数、断られるまでの時間、ヘルスの応答時間、断りのメタデータ。"""

    codes: Counter[grpc.StatusCode] = field(default_factory=Counter)
    reject_seconds: list[float] = field(default_factory=list)
    probe_seconds: list[float] = field(default_factory=list)
    probe_statuses: list[int] = field(default_factory=list)
    trailers: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """受け入れの上限を小さくした 1 ワーカーのサーバー（HTTP と gRPC）。"""
    env = {"MAX_IN_FLIGHT_REQUESTS": str(MAX_IN_FLIGHT)}
    with running_server(tmp_path_factory.mktemp("admission"), env, grpc=True) as live:
        yield live


def rejected(server: LiveServer) -> dict[str, float]:
    """/metrics の rejected_total（protocol → 値）。"""
    text = httpx.get(f"{server.base_url}/metrics", timeout=5.0).text
    return {dict(labels)["protocol"]: value for labels, value in samples(text, REJECTED).items()}


async def _caller(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    request: pb.ModelInferRequest,
    until: float,
    flood: Flood,
) -> None:
    while time.monotonic() < until:
        start = time.monotonic()
        call = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
        try:
            await call
            flood.codes[grpc.StatusCode.OK] += 1
        except grpc.aio.AioRpcError as exc:
            flood.codes[exc.code()] += 1
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                flood.reject_seconds.append(time.monotonic() - start)
                flood.trailers.append(dict(exc.trailing_metadata() or ()))


async def _prober(target: str, until: float, flood: Flood) -> None:
    """毎回新しいチャネルで Health/Check（Kubernetes の grpc プローブと同じ）。"""
    while time.monotonic() < until:
        start = time.monotonic()
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        flood.probe_seconds.append(time.monotonic() - start)
        flood.probe_statuses.append(response.status)
        await asyncio.sleep(0.2)


async def _flood(target: str) -> Flood:
    flood = Flood()
    request = typed_request("X", np.array([SETOSA], dtype=np.float32))
    until = time.monotonic() + FLOOD_SECONDS
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    try:
        stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]
        callers = [_caller(stubs[i % CHANNELS], request, until, flood) for i in range(CONCURRENCY)]
        await asyncio.gather(*callers, _prober(target, until, flood))
    finally:
        for channel in channels:
            await channel.close()
    return flood


def flood_figures(flood: Flood, counted: float) -> str:
    """測った値の 1 行（テストの出力に残す）。"""
    fast = sorted(flood.reject_seconds)
    p50 = fast[len(fast) // 2] if fast else float("nan")
    p99 = fast[int(len(fast) * 0.99)] if fast else float("nan")
    codes = {code.name: count for code, count in flood.codes.items()}
    return (
        f"gRPC flood c={CONCURRENCY} {FLOOD_SECONDS:.0f}s MAX_IN_FLIGHT={MAX_IN_FLIGHT}: {codes}; "
        f"counted {counted:.0f}; RESOURCE_EXHAUSTED p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms; "
        f"health max {max(flood.probe_seconds) * 1000:.1f} ms"
    )


@pytest.mark.timeout(90)
def test_flood_is_shed_fast_counted_and_health_answers(server: LiveServer) -> None:
    before = rejected(server)
    assert before == {"http": 0.0, "grpc": 0.0}  # 両方の系列が最初から 0 で出ている
    flood = asyncio.run(_flood(server.grpc_target))
    after = rejected(server)
    counted = after["grpc"] - before["grpc"]
    print(flood_figures(flood, counted))
    exhausted = flood.codes[grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert set(flood.codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert flood.codes[grpc.StatusCode.OK] > 0  # 断るだけにならず、処理も続く
    assert exhausted > 0
    assert counted == exhausted  # 断った RPC はどれも数え、数えた分はどれも断った
    assert after["http"] == before["http"]
    assert max(flood.reject_seconds) < REJECT_LIMIT
    hint = {"retry-after": "1", "grpc-retry-pushback-ms": "1000"}
    assert all(trailer == hint for trailer in flood.trailers)
    assert flood.probe_statuses
    assert set(flood.probe_statuses) == {SERVING}
    assert max(flood.probe_seconds) < PROBE_LIMIT


def test_after_the_flood_calls_are_admitted_again(server: LiveServer) -> None:
    """洪水が去れば、上限より少ない同時の RPC は全部受け入れる。"""
    request = typed_request("X", np.array([SETOSA], dtype=np.float32))
    time.sleep(0.2)  # C-core の計数の基準を取り直す間（IDLE_SECONDS より長く）

    async def calls() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            results = []
            for _ in range(20):
                try:
                    await stub.ModelInfer(request, timeout=CALL_TIMEOUT)
                    results.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    results.append(exc.code())
            return results

    assert set(asyncio.run(calls())) == {grpc.StatusCode.OK}
