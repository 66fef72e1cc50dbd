"""benchmarks.grpc_load（h2load と Python のクライアント）を実サーバー（127.0.0.1 の空きポート）に
1 秒だけ向ける。h2load の出力の解析は h2load が無くても確かめる。"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks import grpc_load, grpc_models, h2load

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


CLIENTS = [
    "python",
    pytest.param(
        "h2load", marks=pytest.mark.skipif(h2load.find() is None, reason="h2load not installed")
    ),
]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("rows", [1, 64])
def test_a_short_run_counts_requests_without_errors(
    grpc_server: LiveServer, rows: int, client: str
) -> None:
    target = grpc_server.grpc_target
    result = grpc_load.run(target, rows=rows, connections=4, seconds=1, client=client)
    assert result.requests > 10
    assert result.errors == 0
    assert 0.9 < result.duration_s < 2.0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


def test_auto_picks_h2load_only_when_installed() -> None:
    assert grpc_load.chosen() == ("python" if h2load.find() is None else "h2load")
    assert grpc_load.chosen("python") == "python"
    with pytest.raises(ValueError, match="unknown gRPC load client"):
        grpc_load.chosen("ghz")


H2LOAD_OUTPUT = """\
finished in 3.00s, 327.00 req/s, 47.69KB/s
requests: 10 total, 10 started, 10 done, 7 succeeded, 3 failed, 1 errored, 1 timeout
status codes: 7 2xx, 0 3xx, 0 4xx, 1 5xx
"""


def test_h2load_output_is_parsed_like_wrk() -> None:
    log = "".join(f"1796608073839962\t200\t{1000 * (i + 1)}\n" for i in range(7)) + "0\t503\t5\n"
    result = h2load.parse(H2LOAD_OUTPUT, log, 2.0)
    assert (result.requests, result.rps) == (7, 3.5)
    assert (result.socket_errors, result.non_2xx, result.timeouts) == (2, 1, 1)
    assert result.p50_ms == 4.0  # 200 の 7 件（1〜7 ms）だけから
    assert result.max_ms == 7.0
    with pytest.raises(ValueError, match="no request counts"):
        h2load.parse("nothing", "", 1.0)


def test_h2load_sends_a_framed_grpc_message() -> None:
    body = h2load.framed(b"abc")
    assert body == b"\x00\x00\x00\x00\x03abc"  # 圧縮なし + 4 バイト BE の長さ
    argv = h2load.command(
        "h2load", "http://127.0.0.1:1/x", Path("b"), Path("l"), connections=64, seconds=5
    )
    assert {"-c64", "-m1", "-D5", "content-type: application/grpc", "te: trailers"} <= set(argv)


@pytest.mark.parametrize("model", ["aio", "sync-2"])
def test_minimal_server_models_answer_a_model_infer(model: str) -> None:
    """benchmarks.grpc_models の最小のサーバー（床）も本物の RPC に答える。"""
    process, target = grpc_models.start(model)
    try:
        assert "outputs ['probabilities', 'label']" in grpc_load.check(target, 1)
    finally:
        process.terminate()
        process.wait(timeout=15)
