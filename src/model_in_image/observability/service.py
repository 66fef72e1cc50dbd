"""観測機能の組み立て：create_app が作り、ライフスパンが開始・停止する。"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import IO

from prometheus_client import CollectorRegistry

from model_in_image.dataplane import DataPlane
from model_in_image.metrics import Metrics
from model_in_image.observability.access_log import AccessLog
from model_in_image.observability.monitoring import PredictionMonitor
from model_in_image.observability.monitors import prediction_monitors
from model_in_image.observability.prediction_log import HttpSink, PredictionLog, Sink, StreamSink
from model_in_image.observability.telemetry import RequestTelemetry
from model_in_image.observability.tracing import configure_tracing
from model_in_image.runtime import FloatArray
from model_in_image.settings import Settings

ACCESS_LOG_FLUSH_SECONDS = 0.2
Listener = Callable[[FloatArray, FloatArray], None]


class Observability:
    """アクセスログ・トレース・予測の監視・予測ログ。設定で無効なものは作らない。"""

    def __init__(self, settings: Settings, telemetry: RequestTelemetry) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.monitor: PredictionMonitor | None = None
        self.prediction_log: PredictionLog | None = None
        self._dataplane: DataPlane | None = None
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def create(
        cls,
        settings: Settings,
        probe_routes: Collection[str] = (),
        *,
        stream: IO[bytes] | None = None,
    ) -> Observability:
        """設定からアクセスログまでを用意する（残りはモデルを読み込んだ後の start で）。"""
        access_log = None
        if settings.access_log:
            quiet = () if settings.access_log_probes else probe_routes
            access_log = AccessLog(settings.log_format, stream=stream, quiet_routes=quiet)
        return cls(settings, RequestTelemetry(access_log))

    def start(self, dataplane: DataPlane, metrics: Metrics | None) -> None:
        """トレース・予測の監視・予測ログを用意し、データプレーンのリスナーにする。"""
        settings = self.settings
        listeners: list[Listener] = []
        tracing = configure_tracing(settings, dataplane.model_name)
        if tracing is not None:
            self.telemetry.tracing = tracing
            listeners.append(tracing.observe)
        if metrics is not None and settings.prediction_monitoring:
            # 種類ごとの監視（クラスの指標・入力のドリフト・回帰の予測のドリフト）
            rows = settings.drift_window_rows
            for monitor in prediction_monitors(dataplane, metrics.registry, window_rows=rows):
                if isinstance(monitor, PredictionMonitor):
                    self.monitor = monitor
                metrics.extensions.append(monitor)
                listeners.append(monitor.observe)
        if settings.prediction_log_sample_rate > 0:
            self.prediction_log = PredictionLog(
                self._sink(),
                sample_rate=settings.prediction_log_sample_rate,
                queue_size=settings.prediction_log_queue_size,
                model_name=dataplane.model_name,
                labels=dataplane.labels,
                registry=metrics.registry if metrics is not None else CollectorRegistry(),
            )
            self.prediction_log.start()
            listeners.append(self.prediction_log.observe)
        dataplane.listeners = tuple(listeners)
        self._dataplane = dataplane
        if self.telemetry.access_log is not None:
            self._schedule_flush(self.telemetry.access_log)

    def _sink(self) -> Sink:
        url = self.settings.prediction_log_url
        return HttpSink(url) if url else StreamSink()

    def _schedule_flush(self, access_log: AccessLog) -> None:
        """アクセスログの残りを 0.2 秒ごとに書き出す。"""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            access_log.flush()
            self._timer = loop.call_later(ACCESS_LOG_FLUSH_SECONDS, tick)

        self._timer = loop.call_later(ACCESS_LOG_FLUSH_SECONDS, tick)

    def stop(self) -> None:
        """書き残しを書き出し、送信スレッドとトレースを止める。"""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.telemetry.access_log is not None:
            self.telemetry.access_log.flush()
        if self._dataplane is not None:
            self._dataplane.listeners = ()
        if self.prediction_log is not None:
            self.prediction_log.stop()
        if self.telemetry.tracing is not None:
            self.telemetry.tracing.shutdown()
            self.telemetry.tracing = None
