"""gRPC のテストの補助（期限、ヘルスの問い合わせ、型付きの推論リクエスト）。127.0.0.1 だけ。"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb

from support.samples import MODEL

CALL_TIMEOUT = 10.0
SERVICE = "inference.GRPCInferenceService"
# Open Inference Protocol の gRPC の rpc（サーバーが実装するもの全部）
OIP_METHODS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(target: str, service: str = "", timeout: float = 2.0) -> int | None:
    """grpc.health.v1.Health/Check の状態（接続できなければ None）。毎回新しいチャネル。"""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return None
        status: int = response.status
        return status


def typed_request(
    input_name: str, rows: np.ndarray, datatype: str = "FP32", **fields: Any
) -> pb.ModelInferRequest:
    """型付きの contents（fp32_contents / fp64_contents）の推論リクエスト。"""
    request = pb.ModelInferRequest(model_name=MODEL, **fields)
    tensor = request.inputs.add(name=input_name, datatype=datatype, shape=list(rows.shape))
    field = "fp32_contents" if datatype == "FP32" else "fp64_contents"
    getattr(tensor.contents, field).extend(rows.ravel().tolist())
    return request
