"""api.grpc_v2.server：誤り → 状態コード、メトリクス、メソッドの表と受け入れ制御、チャネル引数、
ライフスパンでの起動と停止。"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from model_in_image.api.grpc_v2 import admission
from model_in_image.api.grpc_v2 import server as grpc_server
from model_in_image.api.grpc_v2.server import (
    Admission,
    GrpcServer,
    MethodTable,
    Observer,
    http_status,
    status_code,
)
from model_in_image.api.grpc_v2.service import InferenceService
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelServerError, NotReadyError
from model_in_image.metrics import Metrics
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb
from model_in_image.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from model_in_image.state import ServerState
from model_in_image.transport.connections import requests_in_flight
from support.apps import SettingsFactory
from support.grpc_v2 import CALL_TIMEOUT, NOT_SERVING, SERVING, health_status
from support.net import HOST, free_port

METHOD = "/inference.GRPCInferenceService/ModelInfer"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
StatusCode = grpc.StatusCode


class FakeContext:
    """grpc.aio.ServicerContext の abort と code だけ（本物と同じく abort は例外を投げる）。"""

    def __init__(self) -> None:
        self.status: StatusCode | None = None
        self.details = ""
        self.trailing: tuple[tuple[str, str], ...] = ()

    async def abort(
        self, code: StatusCode, details: str = "", trailing: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status, self.details, self.trailing = code, details, trailing
        raise grpc.aio.AbortError()

    def code(self) -> StatusCode | None:
        return self.status


@pytest.fixture
def state() -> ServerState:
    """メトリクスを持つ状態（モデルは要らない）。"""
    return ServerState(
        model_name="iris_svc", metrics=Metrics(model_name="iris_svc", model_sha256="0", version="1")
    )


def call(state: ServerState, behavior: Any) -> tuple[Any, FakeContext]:
    """Observer で包んだ behavior を 1 回呼ぶ（結果か例外、と context）。"""
    observed = Observer(state)._observed(METHOD, behavior)
    context = FakeContext()

    async def run() -> Any:
        try:
            return await observed(object(), context)
        except BaseException as exc:  # 投げられた例外そのものを確かめる
            return exc

    return asyncio.run(run()), context


def counted(state: ServerState, status: int) -> bool:
    """METHOD が status で 1 件数えられたか。"""
    assert state.metrics is not None
    line = f'model_in_image_requests_total{{method="GRPC",route="{METHOD}",status="{status}"}} 1.0'
    return line in state.metrics.render().decode()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidInputError.single(("inputs", 0), "bad"), StatusCode.INVALID_ARGUMENT),
        (ModelServerError("x", status_code=400), StatusCode.INVALID_ARGUMENT),
        (ModelServerError("x", status_code=415), StatusCode.INVALID_ARGUMENT),
        (ModelServerError("x", status_code=404), StatusCode.NOT_FOUND),
        (ModelServerError("x", status_code=413), StatusCode.RESOURCE_EXHAUSTED),
        (NotReadyError("x"), StatusCode.UNAVAILABLE),
        (ModelServerError("x"), StatusCode.INTERNAL),
        (ModelServerError("x", status_code=418), StatusCode.INTERNAL),
    ],
)
def test_status_code(exc: ModelServerError, code: StatusCode) -> None:
    assert status_code(exc) == code


def test_every_status_code_has_an_http_status() -> None:
    assert {http_status(code) for code in StatusCode} <= {
        200, 400, 401, 403, 404, 409, 429, 499, 500, 501, 503, 504
    }  # fmt: skip
    assert http_status(None) == 200
    assert http_status(StatusCode.INVALID_ARGUMENT) == 400
    assert http_status(StatusCode.UNAVAILABLE) == 503


def test_listen_address() -> None:
    assert grpc_server.listen_address("0.0.0.0", 8081) == "0.0.0.0:8081"
    assert grpc_server.listen_address("::", 8081) == "[::]:8081"


@pytest.mark.parametrize(("workers", "reuseport"), [(1, 0), (2, 1)])
def test_server_options(make_settings: SettingsFactory, workers: int, reuseport: int) -> None:
    options = dict(grpc_server.server_options(make_settings(workers=workers, max_body_bytes=4096)))
    assert options == {"grpc.max_receive_message_length": 4096, "grpc.so_reuseport": reuseport}


def test_success_is_counted_as_200(state: ServerState) -> None:
    async def ok(request: object, context: FakeContext) -> str:
        return "done"

    result, context = call(state, ok)
    assert result == "done"
    assert context.status is None
    assert counted(state, 200)
    assert state.metrics is not None
    assert state.metrics.active == 0


def test_invalid_input_aborts_with_the_location(state: ServerState) -> None:
    async def bad(request: object, context: FakeContext) -> None:
        raise InvalidInputError.single(("inputs", 0, "contents", 0, 1), "value must be finite")

    result, context = call(state, bad)
    assert isinstance(result, grpc.aio.AbortError)
    assert context.status == StatusCode.INVALID_ARGUMENT
    assert context.details == "inputs.0.contents.0.1: value must be finite"
    assert counted(state, 400)


def test_unexpected_error_is_internal_without_details(
    state: ServerState, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: object, context: FakeContext) -> None:
        raise RuntimeError("secret detail")

    with caplog.at_level(logging.ERROR):
        result, context = call(state, broken)
    assert isinstance(result, grpc.aio.AbortError)
    assert (context.status, context.details) == (StatusCode.INTERNAL, "Internal server error")
    assert "unhandled error on " + METHOD in caplog.text
    assert counted(state, 500)


def test_malformed_message_is_invalid_argument(state: ServerState) -> None:
    async def never(request: object, context: FakeContext) -> None:
        raise AssertionError("the handler must not run")

    observed = Observer(state)._observed(METHOD, never, pb.ModelInferRequest.FromString)
    context = FakeContext()

    async def run() -> None:
        with pytest.raises(grpc.aio.AbortError):
            await observed(b"\xff\xff", context)

    asyncio.run(run())
    assert context.status == StatusCode.INVALID_ARGUMENT
    assert context.details.startswith("malformed request message: ")
    assert counted(state, 400)


def test_abort_inside_the_handler_keeps_its_code(state: ServerState) -> None:
    async def aborts(request: object, context: FakeContext) -> None:
        await context.abort(StatusCode.NOT_FOUND)

    result, context = call(state, aborts)
    assert isinstance(result, grpc.aio.AbortError)
    assert context.status == StatusCode.NOT_FOUND
    assert counted(state, 404)


def test_cancelled_call_is_counted_as_499(state: ServerState) -> None:
    async def cancelled(request: object, context: FakeContext) -> None:
        raise asyncio.CancelledError

    result, _ = call(state, cancelled)
    assert isinstance(result, asyncio.CancelledError)
    assert counted(state, 499)


def test_without_metrics_errors_are_still_converted() -> None:
    async def missing(request: object, context: FakeContext) -> None:
        raise ModelServerError("unknown model: 'x'", status_code=404)

    result, context = call(ServerState(model_name="m"), missing)
    assert isinstance(result, grpc.aio.AbortError)
    assert (context.status, context.details) == (StatusCode.NOT_FOUND, "unknown model: 'x'")


class Details:
    """grpc.HandlerCallDetails の代わり。"""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def noop(request: object, context: object) -> None:
    return None


def table(state: ServerState, limit: int = 8) -> MethodTable:
    """推論・ヘルス・ストリーミングの 3 メソッドの表。"""
    handlers = {
        METHOD: grpc.unary_unary_rpc_method_handler(noop),
        HEALTH_CHECK: grpc.unary_unary_rpc_method_handler(noop),
        "/grpc.health.v1.Health/Watch": grpc.unary_stream_rpc_method_handler(noop),
    }
    return MethodTable(handlers, Observer(state), Admission(limit, state))


def look_up(methods: MethodTable, *names: str) -> list[Any]:
    """grpc.aio と同じく、イベントループのタスクの中でメソッドを引く。"""

    async def run() -> list[Any]:
        return [methods.service(Details(name)) for name in names]  # type: ignore[arg-type]

    return asyncio.run(run())


def test_table_wraps_unary_handlers_once(state: ServerState) -> None:
    watch_method = "/grpc.health.v1.Health/Watch"
    first, second, watch, missing = look_up(table(state), METHOD, METHOD, watch_method, "/s/X")
    assert first is second
    assert first.unary_unary is not None
    assert first.unary_unary is not noop
    assert watch.unary_stream is noop
    assert missing is None


def test_every_generated_method_is_in_the_table(dataplane: DataPlane) -> None:
    """V2 の 6 つの rpc とヘルスの 2 つ（生成された登録関数から集める）。"""
    from grpc_health.v1 import health

    state = ServerState(model_name="iris_svc", dataplane=dataplane)
    methods = grpc_server.method_handlers(InferenceService(state), health.aio.HealthServicer())
    service = "/inference.GRPCInferenceService/"
    names = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata")
    assert set(methods) == {
        *(service + name for name in (*names, "ModelInfer")),
        HEALTH_CHECK,
        "/grpc.health.v1.Health/Watch",
    }
    assert set(methods) >= grpc_server.EXEMPT


def test_admission_rejects_at_the_limit_and_counts(
    state: ServerState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """上限以上なら RESOURCE_EXHAUSTED + 再試行の目安、ヘルスは断らない、断った数を数える。"""
    monkeypatch.setattr(admission, "requests_in_flight", lambda: 8)
    methods = table(state, limit=8)
    rejected, health_check = look_up(methods, METHOD, HEALTH_CHECK)
    assert rejected is methods.rejections[METHOD]
    assert health_check is methods.handlers[HEALTH_CHECK]
    context = FakeContext()

    async def run() -> None:
        with pytest.raises(grpc.aio.AbortError):
            await rejected.unary_unary(b"", context)

    asyncio.run(run())
    assert context.status == StatusCode.RESOURCE_EXHAUSTED
    assert context.details == "server is overloaded (8 requests in flight); retry later"
    assert context.trailing == (("retry-after", "1"), ("grpc-retry-pushback-ms", "1000"))
    assert counted(state, 429)
    assert state.metrics is not None
    text = state.metrics.render().decode()
    assert 'model_in_image_requests_rejected_total{protocol="grpc"} 1.0' in text
    assert 'model_in_image_requests_rejected_total{protocol="http"} 0.0' in text


def test_admitted_rpc_is_counted_until_its_task_ends(state: ServerState) -> None:
    """受け入れた RPC は、その RPC のタスクが終わるまで（HTTP と共有の）処理待ちに数える。"""
    methods = table(state, limit=8)
    seen: list[int] = []

    async def rpc() -> None:
        assert methods.service(Details(METHOD)) is methods.handlers[METHOD]  # type: ignore[arg-type]
        seen.append(requests_in_flight())
        await asyncio.sleep(0)

    async def run() -> None:
        before = requests_in_flight()
        await asyncio.gather(rpc(), rpc())
        await asyncio.sleep(0)  # done コールバックが走る
        seen.append(requests_in_flight() - before)
        seen.insert(0, before)

    asyncio.run(run())
    before, first, second, after = seen
    assert (first - before, second - before, after) == (1, 2, 0)


def test_lifespan_starts_serves_drains_and_stops_grpc(
    make_settings: SettingsFactory, dataplane: DataPlane
) -> None:
    """ライフスパンの起動で待ち受け、ドレインで NOT_SERVING、終了で止まる（同じイベントループ）。"""
    port = free_port()
    target = f"{HOST}:{port}"
    app = create_app(make_settings(grpc_port=port))
    with TestClient(app) as client:
        assert app.grpc_server is not None
        assert app.grpc_server.port == port
        assert health_status(target) == SERVING
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = pb.ModelInferRequest(model_name="iris_svc", id="in-process")
            request.inputs.add(name="X", datatype="FP32", shape=[1, 4])
            request.raw_input_contents.append(np.array([[5.1, 3.5, 1.4, 0.2]], "<f4").tobytes())
            response = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
            assert response.id == "in-process"
            assert response.raw_output_contents[1] == b"\x06\x00\x00\x00setosa"
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=CALL_TIMEOUT).ready
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=CALL_TIMEOUT).live
            ready = pb.ModelReadyRequest(name="iris_svc", version="1")
            assert stub.ModelReady(ready, timeout=CALL_TIMEOUT).ready
            metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=CALL_TIMEOUT)
            assert metadata.name == "model-in-image"
            model = stub.ModelMetadata(
                pb.ModelMetadataRequest(name="iris_svc"), timeout=CALL_TIMEOUT
            )
            # 導いた出力のあとにグラフの出力（名前が重なるものは graph: を付ける）
            assert [t.name for t in model.outputs] == [
                "probabilities",
                "label",
                "graph:label",
                "graph:probabilities",
            ]
        assert client.portal is not None
        client.portal.call(app._on_drain)
        assert health_status(target) == NOT_SERVING
        assert health_status(target, "inference.GRPCInferenceService") == NOT_SERVING
        assert client.get("/metrics").text.count('method="GRPC"') > 0
    assert health_status(target) is None  # ライフスパンの終了で止まった


def test_grpc_port_zero_disables_grpc(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(grpc_port=0))
    assert app.grpc_server is None
    with TestClient(app) as client:
        client.portal.call(app._on_drain)  # 無効なら何もしない
        assert client.get("/readyz").status_code == 200


def test_server_in_use_port_fails_with_one_line(
    make_settings: SettingsFactory, dataplane: DataPlane
) -> None:
    """同じポートの 2 つ目は起動しない（1 ワーカーでは SO_REUSEPORT を使わない）。"""
    settings = make_settings(grpc_port=free_port())
    state = ServerState(model_name="iris_svc", dataplane=dataplane)

    async def scenario() -> str:
        first, second = GrpcServer(settings, state), GrpcServer(settings, state)
        second.drain()  # 起動前のドレインと停止は何もしない
        await second.stop()
        await first.start()
        try:
            with pytest.raises(ModelServerError) as info:
                await second.start()
            return info.value.message
        finally:
            await first.stop()

    message = asyncio.run(scenario())
    assert message.startswith(f"gRPC cannot listen on {HOST}:{settings.grpc_port} (GRPC_PORT")
