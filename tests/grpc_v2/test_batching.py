"""適応バッチ（gRPC）：並行に送った別々の ModelInfer の答えが、バッチなしの答えと同じ。

待ち行列が満ちれば RESOURCE_EXHAUSTED（再試行の目安付き、rejected_total{protocol="grpc"}）。
実サーバー（127.0.0.1）。REST と gRPC は同じ待ち行列を使う。
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from model_in_image.dataplane import DataPlane
from support.batching import MERGE_DELAY_MS, batch_stats, concurrently, iris_requests
from support.grpc_v2 import CALL_TIMEOUT, typed_request
from support.prometheus import samples
from support.samples import SETOSA
from support.servers import LiveServer, running_server


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """適応バッチを有効にしたサーバー（HTTP と gRPC）。"""
    env = {"MAX_BATCH_SIZE": "32", "MAX_BATCH_DELAY_MS": str(MERGE_DELAY_MS), "ACCESS_LOG": "0"}
    with running_server(tmp_path_factory.mktemp("batching"), env, grpc=True) as live:
        yield live


def _outputs(response: pb.ModelInferResponse) -> tuple[np.ndarray, list[str]]:
    by_name = {tensor.name: tensor for tensor in response.outputs}
    probabilities = by_name["probabilities"]
    values = np.asarray(probabilities.contents.fp32_contents, dtype=np.float32)
    labels = [label.decode() for label in by_name["label"].contents.bytes_contents]
    return values.reshape(list(probabilities.shape)), labels


def test_concurrent_answers_equal_unbatched_ones(
    batching_server: LiveServer, dataplane: DataPlane
) -> None:
    requests = iris_requests(80, seed=7)
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def send(rows: list[list[float]]) -> pb.ModelInferResponse:
            request = typed_request("input", np.asarray(rows, dtype=np.float32))
            return stub.ModelInfer(request, timeout=CALL_TIMEOUT)

        responses = concurrently(send, requests)
    for rows, response in zip(requests, responses, strict=True):
        feeds = dataplane.validate(rows, loc=("data",))
        want, labels = dataplane.predict_labels(feeds)
        got, got_labels = _outputs(response)
        np.testing.assert_array_equal(got, want.astype(np.float32))  # 自分の行だけ、同じ値
        assert got_labels == labels
    stats = batch_stats(httpx.get(f"{batching_server.base_url}/metrics", timeout=5.0).text)
    assert stats["batches"] < stats["requests"]


def test_a_full_queue_answers_resource_exhausted(tmp_path: Path) -> None:
    """待ち行列が 1 件で満ちている：次の RPC は待たずに RESOURCE_EXHAUSTED。"""
    env = {"MAX_BATCH_SIZE": "64", "MAX_BATCH_DELAY_MS": "1000", "MAX_BATCH_QUEUE": "1"}
    with (
        running_server(tmp_path, env, grpc=True) as server,
        grpc.insecure_channel(server.grpc_target) as channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def send(_: int) -> tuple[grpc.StatusCode, dict[str, str]]:
            request = typed_request("input", np.asarray([SETOSA], dtype=np.float32))
            try:
                stub.ModelInfer(request, timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                return exc.code(), dict(exc.trailing_metadata() or ())
            return grpc.StatusCode.OK, {}

        results = concurrently(send, range(2), threads=2)
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=5.0).text
    codes = sorted(results, key=lambda result: result[0].value[0])
    assert [code for code, _ in codes] == [grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert codes[1][1]["retry-after"] == "1"
    rejected = samples(metrics, "model_in_image_requests_rejected_total")
    assert rejected[(("protocol", "grpc"),)] == 1
