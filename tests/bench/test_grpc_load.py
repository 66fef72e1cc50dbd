"""benchmarks.grpc_load を実サーバー（127.0.0.1 の空きポート）に 1 秒だけ向ける。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from benchmarks import grpc_load

from support.servers import LiveServer, running_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gRPC を有効にした本実装（1 ワーカー）。"""
    env = {"LOG_LEVEL": "WARNING"}
    with running_server(tmp_path_factory.mktemp("grpc-load"), env, grpc=True) as server:
        yield server


def test_check_sees_both_outputs(grpc_server: LiveServer) -> None:
    assert "outputs ['probabilities', 'label']" in grpc_load.check(grpc_server.grpc_target, 64)


@pytest.mark.parametrize("rows", [1, 64])
def test_a_short_run_counts_requests_without_errors(grpc_server: LiveServer, rows: int) -> None:
    result = grpc_load.run(grpc_server.grpc_target, rows=rows, connections=4, seconds=1)
    assert result.requests > 10
    assert result.errors == 0
    assert 0.9 < result.duration_s < 2.0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
