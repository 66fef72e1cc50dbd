"""アプリの組み立て：create_app(settings, service=None) が ASGI アプリを返す。"""

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
from model_in_image.api.hotpath import HotPathDispatcher
from model_in_image.api.routes import HOT_ROUTES, register_hot_routes
from model_in_image.api.state import ServerState
from model_in_image.api.v2 import V2Dispatcher, register_v2_routes, v2_hot_routes
from model_in_image.errors import ModelServerError
from model_in_image.inference import InferenceService, build_service
from model_in_image.metrics import Metrics
from model_in_image.settings import Settings

logger = logging.getLogger(__name__)

METRICS_FLUSH_SECONDS = 1.0
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class ModelServerApp:
    """最外層の ASGI アプリ：ライフスパン（モデルの読み込み）と高速経路 + FastAPI。"""

    def __init__(
        self,
        settings: Settings,
        state: ServerState,
        api: FastAPI,
        service: InferenceService | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.api = api
        self._preloaded = service
        self._restore_signal: Callable[[], None] = lambda: None
        self._flush_timer: asyncio.TimerHandle | None = None
        routes = [*HOT_ROUTES, *v2_hot_routes(settings.resolved_model_name)]
        v2_infer = V2Dispatcher(api, state, settings)  # V2 の推論（ヘッダとバイナリ部を扱う）
        self._dispatch = HotPathDispatcher(v2_infer, routes, state, settings.max_body_bytes)

    def attach_metrics(self, metrics: Metrics) -> None:
        """読み込んだモデルのメトリクスを有効にする。"""
        self.state.metrics = metrics
        self._dispatch.metrics = metrics
        if self.state.service is not None:
            self.state.service.observer = metrics.observe_inference

    def startup(self) -> None:
        """モデルを読み込み（ウォームアップ込み）、メトリクスと SIGTERM のドレインを用意する。"""
        service = self._preloaded or build_service(self.settings)
        self.state.service = service
        if self.settings.metrics_enabled:
            self.attach_metrics(
                Metrics(
                    model_name=service.model_name,
                    model_sha256=service.classifier.sha256,
                    version=__version__,
                )
            )
            self._schedule_flush()
        self._restore_signal = install_drain_handler(
            self.state, self.settings.shutdown_drain_seconds
        )
        freeze_heap()

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI エントリポイント。"""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._dispatch(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """ASGI ライフスパン。読み込みに失敗したらトレースバックなしの 1 行で起動を止める。"""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
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
                await send({"type": "lifespan.shutdown.complete"})
                return


def freeze_heap() -> None:
    """起動時に作った長寿命のオブジェクトを GC の対象から外す（gc.freeze）。

    このプロセスには 7 万個ほどのオブジェクト（FastAPI・pydantic・numpy など）があり、
    完全 GC 1 回で約 45 ms すべてのリクエストが止まる。凍結すれば完全 GC は 1 ms 未満になる。
    先に collect して、起動中に出たゴミは凍結しない。
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, service: InferenceService | None = None) -> ModelServerApp:
    """アプリを作る。service を渡さなければライフスパンでモデルを読み込む。"""
    state = ServerState()
    api = FastAPI(
        title="model-in-image",
        version=__version__,
        description="Model-in-Image パターンの推論 API（ONNX Runtime）。",
        default_response_class=ORJSONResponse,
        docs_url=None,
        redoc_url=None,
    )
    register_hot_routes(api, state, settings.max_body_bytes)
    register_v2_routes(api, state, settings)
    register_docs(api)

    @api.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> ORJSONResponse:
        logger.error("unhandled error", exc_info=exc)
        return ORJSONResponse({"detail": "Internal server error"}, status_code=500)

    return ModelServerApp(settings, state, api, service)


def install_drain_handler(state: ServerState, drain_seconds: float) -> Callable[[], None]:
    """SIGTERM で readiness を即座に 503 にし、drain_seconds 後に uvicorn の終了処理へ渡す。"""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: SignalHandler = signal.getsignal(signal.SIGTERM)
    loop = asyncio.get_running_loop()

    def forward(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if state.draining:  # 2 回目は即座に終了処理へ
            forward(signum, frame)
            return
        state.draining = True
        logger.info("SIGTERM: readiness is now 503; draining for %.1f s", drain_seconds)
        loop.call_soon_threadsafe(loop.call_later, drain_seconds, forward, signum, frame)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    signal.signal(signal.SIGTERM, on_sigterm)
    return restore
