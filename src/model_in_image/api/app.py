"""アプリの組み立て：create_app(settings, dataplane=None) が ASGI アプリを返す。

リクエストの経路は 1 つ：ModelServerApp（ライフスパン）→ Dispatcher（ルート表）→ 各 API の
ハンドラ → DataPlane → OnnxModel。表にない /docs・/openapi.json だけが FastAPI に進む。
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse
from starlette.types import Receive, Scope, Send

from model_in_image import __version__
from model_in_image.api.docs import register_docs
from model_in_image.api.grpc_v2.server import GrpcServer
from model_in_image.api.openapi import register_routes
from model_in_image.api.probes import Probes
from model_in_image.api.seed.endpoints import SeedAPI
from model_in_image.api.v1.endpoints import V1API
from model_in_image.api.v2.endpoints import V2API
from model_in_image.batching.adaptive import AdaptiveBatcher
from model_in_image.dataplane import DataPlane
from model_in_image.errors import ModelServerError
from model_in_image.loading import load_dataplane
from model_in_image.metrics import Metrics
from model_in_image.observability.service import Observability
from model_in_image.settings import Settings
from model_in_image.state import ServerState
from model_in_image.transport.connections import begin_drain, requests_in_flight, reset_drain
from model_in_image.transport.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

METRICS_FLUSH_SECONDS = 1.0
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class ModelServerApp:
    """最外層の ASGI アプリ：ライフスパン（モデルの読み込み）とディスパッチャ。"""

    def __init__(
        self,
        settings: Settings,
        state: ServerState,
        dispatcher: Dispatcher,
        api: FastAPI,
        preparers: list[Callable[[DataPlane], None]],
        observability: Observability,
        dataplane: DataPlane | None = None,
        grpc_server: GrpcServer | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.dispatcher = dispatcher
        self.api = api
        self.observability = observability
        dispatcher.telemetry = self.observability.telemetry
        self._preparers = preparers
        self._preloaded = dataplane
        self.grpc_server = grpc_server
        self._restore_signal: Callable[[], None] = lambda: None
        self._flush_timer: asyncio.TimerHandle | None = None

    def attach_metrics(self, metrics: Metrics) -> None:
        """読み込んだモデルのメトリクスを有効にする。"""
        self.state.metrics = metrics
        self.dispatcher.metrics = metrics
        dataplane = self.state.dataplane
        if dataplane is not None:
            dataplane.observer = metrics.observe_inference
            if dataplane.batcher is not None:
                dataplane.batcher.observer = metrics

    def startup(self) -> None:
        """モデルを読み込み（ウォームアップ込み）、メトリクスと SIGTERM のドレインを用意する。"""
        dataplane = self._preloaded or load_dataplane(self.settings)
        for prepare in self._preparers:
            prepare(dataplane)
        dataplane.batcher = self._batcher(dataplane)
        self.state.dataplane = dataplane
        if self.settings.metrics_enabled:
            self.attach_metrics(
                Metrics(
                    model_name=dataplane.model_name,
                    model_sha256=dataplane.model.sha256,
                    version=__version__,
                )
            )
            self._schedule_flush()
        reset_drain()  # 同じプロセスで前に動いたサーバーのドレインを持ち越さない
        self.observability.start(dataplane, self.state.metrics)
        self._restore_signal = install_drain_handler(
            self.state, self.settings.shutdown_drain_seconds, on_drain=self._on_drain
        )
        freeze_heap()

    def _batcher(self, dataplane: DataPlane) -> AdaptiveBatcher | None:
        """MAX_BATCH_SIZE > 1 なら適応バッチを作る（1 ならキューもスレッドも作らない）。"""
        settings = self.settings
        if settings.max_batch_size <= 1:
            return None
        return AdaptiveBatcher(
            dataplane.model.run,
            max_rows=settings.max_batch_size,
            delay=settings.max_batch_delay_ms / 1000,
            max_queue=settings.max_batch_queue,
            in_flight=requests_in_flight,
        )

    def _on_drain(self) -> None:
        """SIGTERM：gRPC のヘルスを NOT_SERVING にし（HTTP と同時）、バッチを待たせない。"""
        if self.grpc_server is not None:
            self.grpc_server.drain()
        dataplane = self.state.dataplane
        if dataplane is not None and dataplane.batcher is not None:
            dataplane.batcher.drain()

    def _schedule_flush(self) -> None:
        """積んだメトリクスを 1 秒ごとに反映する（ワーカーが複数でもスクレイプに間に合う）。"""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            if self.state.metrics is not None:
                self.state.metrics.flush()
            self._flush_timer = loop.call_later(METRICS_FLUSH_SECONDS, tick)

        self._flush_timer = loop.call_later(METRICS_FLUSH_SECONDS, tick)

    def shutdown(self) -> None:
        """終了処理（以後 readiness は 503）。"""
        self._restore_signal()
        self.state.draining = True
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        if self.state.metrics is not None:
            self.state.metrics.flush()
        self.observability.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI エントリポイント。"""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.dispatcher(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """ASGI ライフスパン。読み込みに失敗したらトレースバックなしの 1 行で起動を止める。"""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                    if self.grpc_server is not None:  # モデルのウォームアップの後で待ち受ける
                        await self.grpc_server.start()
                except ModelServerError as exc:
                    # 理由だけを 1 行で報告する（サーバーはトレースバックを出さずに終了する）
                    logger.error("start-up failed: %s", exc.message)
                    await send({"type": "lifespan.startup.failed", "message": exc.message})
                    raise
                except Exception as exc:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                if self.grpc_server is not None:
                    await self.grpc_server.stop()
                await self._close_batcher()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _close_batcher(self) -> None:
        """待ち行列と実行中のバッチを終えてから適応バッチを止める（処理中のリクエストの後）。"""
        dataplane = self.state.dataplane
        if dataplane is not None and dataplane.batcher is not None:
            batcher, dataplane.batcher = dataplane.batcher, None
            await batcher.close()


def freeze_heap() -> None:
    """起動時に作った長寿命のオブジェクトを GC の対象から外す（gc.freeze）。

    このプロセスには 7 万個ほどのオブジェクト（FastAPI・pydantic・numpy など）があり、
    完全 GC 1 回で約 45 ms すべてのリクエストが止まる。凍結すれば完全 GC は 1 ms 未満になる。
    先に collect して、起動中に出たゴミは凍結しない。
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, dataplane: DataPlane | None = None) -> ModelServerApp:
    """アプリを作る。dataplane を渡さなければライフスパンでモデルを読み込む。"""
    state = ServerState(model_name=settings.resolved_model_name)
    seed, v2 = SeedAPI(state), V2API(state)
    api = FastAPI(
        title="model-in-image",
        version=__version__,
        description="Model-in-Image パターンの推論 API（ONNX Runtime）。",
        default_response_class=ORJSONResponse,
        docs_url=None,
        redoc_url=None,
        # 末尾のスラッシュ違いは 307 で転送しない（Location にクライアントの Host を写さない）
        redirect_slashes=False,
    )
    routes = [*seed.routes(), *Probes(state).routes(), *v2.routes(), *V1API(state).routes()]
    dispatcher = Dispatcher(
        routes,
        api,
        max_body=settings.max_body_bytes,
        max_in_flight=settings.max_in_flight_requests,
    )
    register_routes(api, dispatcher)
    register_docs(api)

    @api.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> ORJSONResponse:
        logger.error("unhandled error", exc_info=exc)
        return ORJSONResponse({"detail": "Internal server error"}, status_code=500)

    grpc_server = GrpcServer(settings, state) if settings.grpc_port else None
    # アクセスログに成功を書かないルート：プローブと Prometheus のスクレイプ
    quiet = [route.path for route in routes if route.probe] + ["/metrics"]
    observability = Observability.create(settings, quiet)
    preparers: list[Callable[[DataPlane], None]] = [seed.prepare, v2.prepare]
    return ModelServerApp(
        settings, state, dispatcher, api, preparers, observability, dataplane, grpc_server
    )


def install_drain_handler(
    state: ServerState, drain_seconds: float, on_drain: Callable[[], None] | None = None
) -> Callable[[], None]:
    """SIGTERM・SIGHUP でドレインを始め、drain_seconds 後に uvicorn の終了処理（SIGTERM）へ渡す。

    ドレイン中は readiness が 503、応答には Connection: close が付き、アイドルの接続は閉じる
    （クライアントは別の Pod に繋ぎ直す）。SIGHUP もコンテナでは終了の合図として同じに扱う。
    on_drain はドレインの開始時にイベントループの上で 1 度だけ呼ぶ（gRPC のヘルス）。
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: SignalHandler = signal.getsignal(signal.SIGTERM)
    previous_hup: SignalHandler = signal.getsignal(signal.SIGHUP)
    loop = asyncio.get_running_loop()

    def forward(frame: FrameType | None) -> None:
        if callable(previous):
            previous(signal.SIGTERM, frame)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if state.draining:  # 2 回目は即座に終了処理へ
            forward(frame)
            return
        state.draining = True
        logger.info("%s: readiness is now 503; draining for %.1f s", name, drain_seconds)
        loop.call_soon_threadsafe(begin_drain)
        if on_drain is not None:
            loop.call_soon_threadsafe(on_drain)
        loop.call_soon_threadsafe(loop.call_later, drain_seconds, forward, frame)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    return restore
