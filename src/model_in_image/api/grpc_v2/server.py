"""gRPC サーバー（grpc.aio）：HTTP と同じプロセス・同じイベントループ（uvloop）で動く。

ライフスパンの起動の最後（モデルのウォームアップの後）に GRPC_PORT で待ち受けを始め、ヘルス
（grpc.health.v1.Health）を SERVING にする。SIGTERM（ドレインの開始）で NOT_SERVING にし、
ライフスパンの終了で新しい RPC を断って処理中の RPC を待つ（最長 GRACEFUL_TIMEOUT_SECONDS）。

メソッドは 1 つの表（MethodTable、grpc の GenericRpcHandler）で引く。インターセプタは RPC ごとに
コルーチンを 1 つ足し、grpc の「登録済みメソッド」はメソッドの数だけの待ち受けを RPC ごとに
asyncio.wait で見張らせるので、どちらも使わない（docs/benchmarks.md の「gRPC と REST」）。
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from model_in_image.api.grpc_v2.admission import Admission, core_calls_reader, server_ids
from model_in_image.api.grpc_v2.service import SERVICE_NAME, InferenceService
from model_in_image.codecs.v2 import error_message
from model_in_image.errors import InvalidInputError, ModelServerError, OverloadedError
from model_in_image.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from model_in_image.settings import Settings
from model_in_image.state import ServerState

logger = logging.getLogger(__name__)

METHOD_LABEL = "GRPC"
INTERNAL_ERROR = "Internal server error"
SERVING = health_pb2.HealthCheckResponse.SERVING
# ヘルスの対象："" はサーバー全体（Kubernetes の grpc プローブの既定）
HEALTH_SERVICES = (health.OVERALL_HEALTH, SERVICE_NAME)
HEALTH_SERVICE = "grpc.health.v1.Health"
# 受け入れ制御の対象外（プローブ）：HTTP の /livez・/readyz・/v2/health/live・ready に当たる
EXEMPT = frozenset(
    {
        f"/{HEALTH_SERVICE}/Check",
        f"/{HEALTH_SERVICE}/Watch",
        f"/{SERVICE_NAME}/ServerLive",
        f"/{SERVICE_NAME}/ServerReady",
    }
)
# 断った RPC の再試行の目安（HTTP の Retry-After: 1 と同じ 1 秒）。retry-after は人とプロキシ向け、
# grpc-retry-pushback-ms は gRPC のクライアントの再試行ポリシー（retryPolicy）が読む
RETRY_AFTER_SECONDS = 1
RETRY_METADATA = (
    ("retry-after", str(RETRY_AFTER_SECONDS)),
    ("grpc-retry-pushback-ms", str(RETRY_AFTER_SECONDS * 1000)),
)

# ModelServerError の HTTP ステータス → gRPC の状態コード（入力の誤りは常に INVALID_ARGUMENT）
_STATUS_TO_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# メトリクスの status ラベル：gRPC の状態コードを google.rpc.Code が定める HTTP ステータスで記録する
# （REST と同じ系列で 4xx・5xx を数えられる）
_CODE_TO_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

if TYPE_CHECKING:  # grpc の型は typeshed の中だけで総称型
    Context = grpc.aio.ServicerContext[Any, Any]
    Behavior = Callable[[Any, Context], Awaitable[Any]]
    Handler = grpc.RpcMethodHandler[Any, Any]


def status_code(exc: ModelServerError) -> grpc.StatusCode:
    """誤りの gRPC の状態コード（知らないステータスは INTERNAL）。"""
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return _STATUS_TO_CODE.get(exc.status_code, grpc.StatusCode.INTERNAL)


def http_status(code: grpc.StatusCode | None) -> int:
    """メトリクスの status ラベル（google.rpc.Code の HTTP 対応）。"""
    return _CODE_TO_HTTP.get(code or grpc.StatusCode.OK, 500)


def parse_message(parse: Callable[[bytes], Any], raw: bytes) -> Any:
    """リクエストを protobuf として解析する（壊れていれば 400 = INVALID_ARGUMENT）。"""
    try:
        return parse(raw)
    except DecodeError as exc:
        raise ModelServerError(f"malformed request message: {exc}", status_code=400) from None


def listen_address(host: str, port: int) -> str:
    """grpc の待ち受けアドレス（IPv6 は角括弧で囲む）。"""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """grpc のチャネル引数。

    受け取るメッセージの上限は MAX_BODY_BYTES（超えれば RESOURCE_EXHAUSTED）。SO_REUSEPORT は
    ワーカーが複数のときだけ使う：各ワーカーが同じ GRPC_PORT で待ち受け、カーネルが接続を
    振り分ける。1 プロセスでは使わない（他のプロセスが使用中のポートなら起動を失敗させる）。
    """
    return [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


class Observer:
    """unary の RPC を包み、誤りを状態コードに変え（唯一の場所）、メトリクスを記録する。

    route ラベルは RPC のフルネーム（表にあるメソッドだけ：有限）、method は GRPC。
    protobuf として壊れたメッセージも INVALID_ARGUMENT にするため、解析もここで行う（grpc に
    任せると UNKNOWN とトレースバックになる）。
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def wrap(self, method: str, handler: Handler) -> Handler:
        """unary のハンドラを包む（ストリーミング（Health.Watch）はそのまま返す）。"""
        if handler.unary_unary is None:
            return handler
        behavior = cast("Behavior", handler.unary_unary)
        return grpc.unary_unary_rpc_method_handler(
            self._observed(method, behavior, handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def rejecting(self, method: str, message: str) -> Handler:
        """受け入れ制御で断るハンドラ（RESOURCE_EXHAUSTED と再試行の目安、本文は読まない）。"""

        async def reject(request: bytes, context: Context) -> None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message, RETRY_METADATA)

        return grpc.unary_unary_rpc_method_handler(self._observed(method, reject))

    def _observed(
        self, method: str, behavior: Behavior, parse: Callable[[bytes], Any] | None = None
    ) -> Behavior:
        async def observed(request: Any, context: Context) -> Any:
            metrics = self.state.metrics
            if metrics is not None:
                metrics.active += 1
            start = perf_counter()
            code: grpc.StatusCode | None = grpc.StatusCode.OK
            try:
                if parse is not None:
                    request = parse_message(parse, request)
                return await behavior(request, context)
            except OverloadedError as exc:  # 適応バッチの待ち行列が満ちた：受け入れ制御と同じ
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                if metrics is not None:
                    metrics.rejected_grpc += 1
                await context.abort(code, error_message(exc), RETRY_METADATA)
            except ModelServerError as exc:
                code = status_code(exc)
                await context.abort(code, error_message(exc))
            except grpc.aio.AbortError:  # 包んだハンドラ自身が abort した（Health.Check など）
                code = context.code()
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                logger.exception("unhandled error on %s", method)
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, INTERNAL_ERROR)
            finally:
                if metrics is not None:
                    metrics.active -= 1
                    metrics.observe_request(
                        method, METHOD_LABEL, http_status(code), perf_counter() - start
                    )

        return observed


class _Collector:
    """生成された add_*Servicer_to_server にサーバーの代わりに渡し、メソッドの表だけを受け取る。"""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        """同じハンドラが add_registered_method_handlers にも渡るので、こちらは捨てる。"""

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        """サービスのメソッドをフルネームで表に入れる。"""
        self.handlers.update({f"/{service}/{name}": h for name, h in handlers.items()})


def method_handlers(inference: InferenceService, health_servicer: Any) -> dict[str, Handler]:
    """V2 の推論サービスとヘルスの全メソッド：RPC のフルネーム → 生成されたハンドラ。"""
    collector = _Collector()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(inference, collector)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, collector)
    return collector.handlers


class MethodTable(grpc.GenericRpcHandler):
    """RPC のフルネームでハンドラを引き、受け入れ制御をかける（プローブは対象外）。"""

    def __init__(
        self, handlers: Mapping[str, Handler], observer: Observer, admission: Admission
    ) -> None:
        self.admission = admission
        self.handlers = {method: observer.wrap(method, h) for method, h in handlers.items()}
        self.rejections = {
            method: observer.rejecting(method, admission.message)
            for method in handlers
            if method not in EXEMPT
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        """RPC の始めに grpc.aio がその RPC のタスクの中で呼ぶ（知らないメソッドは None）。"""
        method = handler_call_details.method
        handler = self.handlers.get(method)
        if handler is None or method in EXEMPT or self.admission.admit():
            return handler
        return self.rejections[method]


class GrpcServer:
    """V2 の gRPC サービスとヘルスサービスを持つ grpc.aio のサーバー（ワーカーごとに 1 つ）。"""

    def __init__(self, settings: Settings, state: ServerState) -> None:
        self.settings = settings
        self.state = state
        self.address = listen_address(settings.host, settings.grpc_port)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health: Any = None  # grpc_health.v1.health.aio.HealthServicer（型情報なし）
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """待ち受けを始め、ヘルスを SERVING にする（モデルのウォームアップの後に呼ぶ）。"""
        self._health = health.aio.HealthServicer()
        handlers = method_handlers(InferenceService(self.state), self._health)
        admission = Admission(self.settings.max_in_flight_requests, self.state)
        table = MethodTable(handlers, Observer(self.state), admission)
        others = server_ids()
        server = grpc.aio.server(handlers=[table], options=server_options(self.settings))
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise ModelServerError(
                f"gRPC cannot listen on {self.address} (GRPC_PORT; 0 disables gRPC): {exc}"
            ) from None
        await server.start()
        self._server = server
        ours = server_ids() - others
        if len(ours) == 1:  # C-core の中で待っている RPC も受け入れ制御に数える
            admission.watch_core(core_calls_reader(ours.pop()))
        else:
            logger.warning("gRPC admission counts only the RPCs in Python (no channelz server)")
        for name in HEALTH_SERVICES:
            await self._health.set(name, SERVING)
        logger.info("gRPC (Open Inference Protocol) listening on %s", self.address)

    def drain(self) -> None:
        """ヘルスを NOT_SERVING にする（以後は戻らない）。イベントループの上で呼ぶ。"""
        if self._health is None:
            return
        task = asyncio.get_running_loop().create_task(self._health.enter_graceful_shutdown())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """新しい RPC を断り、処理中の RPC を最長 GRACEFUL_TIMEOUT_SECONDS 待って止める。"""
        server, self._server = self._server, None
        if server is None:
            return
        await self._health.enter_graceful_shutdown()
        await server.stop(grace=self.settings.graceful_timeout_seconds)
        logger.info("gRPC stopped")
