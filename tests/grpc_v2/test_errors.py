"""gRPC の誤り：入力の誤りは INVALID_ARGUMENT（文つき）、不明なモデルは NOT_FOUND、
大きすぎるメッセージは RESOURCE_EXHAUSTED。どれも INTERNAL にならず、サーバーは答え続ける。
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from support.grpc_v2 import CALL_TIMEOUT, OIP_METHODS, SERVICE, typed_request
from support.net import HOST
from support.samples import MODEL, SETOSA
from support.servers import LiveServer

Stub = service_pb2_grpc.GRPCInferenceServiceStub
ONE_ROW = np.array([SETOSA], dtype=np.float32)
INPUT = "X"
MAX_BODY_BYTES = 1_048_576  # 既定の MAX_BODY_BYTES


def request_with(change: Callable[[pb.ModelInferRequest], None]) -> pb.ModelInferRequest:
    """正しい 1 行の型付きリクエストを change で壊す。"""
    request = typed_request(INPUT, ONE_ROW)
    change(request)
    return request


def raw_request(raw: bytes, shape: list[int], datatype: str = "FP32") -> pb.ModelInferRequest:
    """raw_input_contents のリクエスト。"""
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


def _set_shape(shape: list[int]) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend(shape)

    return change


def _set(attribute: str, value: object) -> Callable[[pb.ModelInferRequest], None]:
    return lambda request: setattr(request.inputs[0], attribute, value)


def _add_input(request: pb.ModelInferRequest) -> None:
    request.inputs.append(request.inputs[0])


def _clear_inputs(request: pb.ModelInferRequest) -> None:
    del request.inputs[:]


def _int_contents(request: pb.ModelInferRequest) -> None:
    request.inputs[0].contents.int_contents.extend([1, 2, 3, 4])


def _values(values: list[float]) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        contents = request.inputs[0].contents.fp32_contents
        del contents[:]
        contents.extend(values)

    return change


def _raw_too(request: pb.ModelInferRequest) -> None:
    request.raw_input_contents.append(ONE_ROW.tobytes())


def _output(name: str, twice: bool = False) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        for _ in range(2 if twice else 1):
            request.outputs.add(name=name)

    return change


def _string_flag(request: pb.ModelInferRequest) -> None:
    request.parameters["binary_data_output"].string_param = "true"


def _output_int_flag(request: pb.ModelInferRequest) -> None:
    request.outputs.add(name="label").parameters["binary_data"].int64_param = 1


BAD_TYPED: list[tuple[str, Callable[[pb.ModelInferRequest], None], str]] = [
    ("zero-inputs", _clear_inputs, "one input"),
    ("two-inputs", _add_input, "one input"),
    ("datatype-int32", _set("datatype", "INT32"), "datatype"),
    ("datatype-bytes", _set("datatype", "BYTES"), "datatype"),
    ("datatype-empty", _set("datatype", ""), "datatype"),
    ("shape-1d", _set_shape([4]), "shape"),
    ("shape-3d", _set_shape([1, 4, 1]), "shape"),
    ("shape-width", _set_shape([1, 3]), "shape"),
    ("shape-negative", _set_shape([-1, 4]), "shape"),
    ("shape-empty", _set_shape([]), "shape"),
    ("wrong-contents-field", _int_contents, "int_contents"),
    ("too-few-values", _values([5.1, 3.5, 1.4]), "3 values"),
    ("too-many-values", _values([*SETOSA, *SETOSA]), "8 values"),
    ("no-values", _values([]), "0 values"),
    ("empty-batch", lambda r: (_set_shape([0, 4])(r), _values([])(r)), "at least one row"),
    ("nan", _values([float("nan"), 3.5, 1.4, 0.2]), "finite"),
    ("inf", _values([5.1, float("inf"), 1.4, 0.2]), "inputs.0.contents.0.1"),
    ("contents-and-raw", _raw_too, "both contents and raw_input_contents"),
    ("unknown-output", _output("logits"), "unknown output"),
    ("duplicate-output", _output("label", twice=True), "twice"),
    ("binary-flag-type", _string_flag, "binary_data_output"),
    ("output-binary-flag-type", _output_int_flag, "binary_data"),
]


@pytest.mark.parametrize(
    ("change", "fragment"), [pytest.param(c, f, id=i) for i, c, f in BAD_TYPED]
)
def test_bad_typed_request_is_invalid_argument(
    stub: Stub, change: Callable[[pb.ModelInferRequest], None], fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_with(change), timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()


BAD_RAW: list[tuple[str, pb.ModelInferRequest, str]] = [
    ("short", raw_request(bytes(12), [1, 4]), "needs 16"),
    ("long", raw_request(bytes(20), [1, 4]), "needs 16"),
    ("fp64-size", raw_request(ONE_ROW.tobytes(), [1, 4], "FP64"), "needs 32"),
    ("nan", raw_request(np.full((1, 4), np.nan, np.float32).tobytes(), [1, 4]), "finite"),
    ("huge-shape", raw_request(bytes(16), [2**40, 4]), "bytes of binary data"),
]


@pytest.mark.parametrize(
    ("request_", "fragment"), [pytest.param(r, f, id=i) for i, r, f in BAD_RAW]
)
def test_bad_raw_request_is_invalid_argument(
    stub: Stub, request_: pb.ModelInferRequest, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_, timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()


def test_raw_contents_count_must_match_inputs(stub: Stub) -> None:
    request = raw_request(ONE_ROW.tobytes(), [1, 4])
    request.raw_input_contents.append(ONE_ROW.tobytes())
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2 entries for 1 inputs" in info.value.details()


def test_too_many_rows_is_invalid_argument(stub: Stub) -> None:
    rows = np.tile(ONE_ROW, (1001, 1))  # 既定の MAX_REQUEST_ROWS は 1000
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(typed_request(INPUT, rows), timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too many rows: 1001 > limit 1000" in info.value.details()


def test_message_over_max_body_bytes_is_resource_exhausted(stub: Stub) -> None:
    rows = MAX_BODY_BYTES // 16 + 1
    request = raw_request(bytes(rows * 16), [rows, 4])
    assert request.ByteSize() > MAX_BODY_BYTES
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("model", "version"), [("no_such_model", ""), (MODEL, "7")], ids=["model", "version"]
)
def test_unknown_model_or_version_is_not_found(stub: Stub, model: str, version: str) -> None:
    request = typed_request(INPUT, ONE_ROW)
    request.model_name, request.model_version = model, version
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert model in info.value.details()
    for call, message in (
        (stub.ModelMetadata, pb.ModelMetadataRequest(name=model, version=version)),
        (stub.ModelReady, pb.ModelReadyRequest(name=model, version=version)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(message, timeout=CALL_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_tritonclient_sees_invalid_argument_for_a_bad_width(
    client: triton.InferenceServerClient,
) -> None:
    tensor = triton.InferInput(INPUT, [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [tensor], client_timeout=CALL_TIMEOUT)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "shape [1, 3] does not match the model's [-1, 4]" in info.value.message()


def test_unknown_method_is_unimplemented(grpc_server: LiveServer) -> None:
    with grpc.insecure_channel(grpc_server.grpc_target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelLoad")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_errors_are_counted_with_bounded_labels(stub: Stub, grpc_server: LiveServer) -> None:
    """誤りの後もサーバーは答え、メトリクスは RPC 名と HTTP 相当のステータスで数える。"""
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(request_with(_set_shape([1, 3])), timeout=CALL_TIMEOUT)
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=CALL_TIMEOUT).live
    metrics = _scrape(grpc_server)
    route = 'route="/inference.GRPCInferenceService/ModelInfer"'
    assert f'model_in_image_requests_total{{method="GRPC",{route},status="400"}}' in metrics
    assert 'status="500"' not in metrics
    routes = {
        line.split('route="', 1)[1].split('"', 1)[0]
        for line in metrics.splitlines()
        if line.startswith("model_in_image_requests_total{") and 'method="GRPC"' in line
    }
    assert routes <= {f"/{SERVICE}/{name}" for name in OIP_METHODS} | {
        "/grpc.health.v1.Health/Check"
    }


def _scrape(server: LiveServer) -> str:
    """/metrics（1 プロセスなら描画の前に観測値が反映される）。"""
    return httpx.get(f"http://{HOST}:{server.port}/metrics", timeout=CALL_TIMEOUT).text


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05ab"], ids=["garbage", "truncated"])
def test_malformed_protobuf_is_invalid_argument(grpc_server: LiveServer, body: bytes) -> None:
    """protobuf として読めないメッセージも入力の誤り（UNKNOWN やトレースバックにしない）。"""
    with grpc.insecure_channel(grpc_server.grpc_target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(body, timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request message" in info.value.details()
    assert "Traceback" not in grpc_server.log()
