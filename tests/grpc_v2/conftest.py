"""gRPC テスト用：gRPC を有効にした実サーバーと、tritonclient の gRPC クライアント・スタブ。

通信先は 127.0.0.1 の空きポートだけ。どの呼び出しにも期限を付ける。
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2_grpc

from support.servers import LiveServer, running_server


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """HTTP と gRPC の両方で待ち受ける実サーバー（モジュールで共有）。"""
    with running_server(tmp_path_factory.mktemp("grpc-server"), grpc=True) as server:
        yield server


@pytest.fixture(scope="module")
def client(grpc_server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    """tritonclient の gRPC クライアント。"""
    with triton.InferenceServerClient(grpc_server.grpc_target) as v2:
        yield v2


@pytest.fixture(scope="module")
def stub(grpc_server: LiveServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """tritonclient のスタブ（型付きの contents など、リクエストを直接組み立てる）。"""
    with grpc.insecure_channel(grpc_server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
