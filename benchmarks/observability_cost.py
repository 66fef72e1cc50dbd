"""観測機能がリクエスト 1 件に足す CPU 時間を、同じプロセスの中で部品ごとに測る。

    uv run --frozen python -m benchmarks.observability_cost

HTTP サーバーを通した比較（python -m benchmarks の ours・ours-noaccesslog・ours-nomonitoring・
ours-tracing）は機械の雑音に埋もれやすいので、ここでは部品だけを timeit で測る（5 回の最小値）。
トレースは SDK のスパンの作成と終了まで（何もしない exporter：別スレッドの送信の費用は含まない）。
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from model_in_image.modelcard import ModelCard
from model_in_image.observability.access_log import AccessLog
from model_in_image.observability.monitoring import PredictionMonitor
from model_in_image.observability.telemetry import RequestTelemetry
from model_in_image.observability.tracing import Tracing
from model_in_image.settings import LogFormat

CARD = Path(__file__).resolve().parents[1] / "models" / "model_card.json"
NUMBER = 50_000
SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "raw_path": b"/predict",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
    "client": ("127.0.0.1", 50000),
}


async def _discard(_: Any) -> None:
    """送らない。"""


def request_cycle(telemetry: RequestTelemetry) -> Callable[[], None]:
    """ディスパッチャが 1 リクエストで呼ぶ begin と finish（応答 23 バイト）。"""

    def cycle() -> None:
        exchange = telemetry.begin(SCOPE, _discard)
        exchange.status, exchange.sent = 200, 23
        telemetry.finish(exchange, "/predict", 200, 0.0001)

    return cycle


def null_tracing() -> Tracing:
    """スパンを作って捨てる Tracing（送信の費用を除く）。"""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracing = Tracing("http://127.0.0.1:9/v1/traces", "iris_svc")
    tracing.provider.shutdown()
    tracing.provider = TracerProvider()
    tracing.provider.add_span_processor(SimpleSpanProcessor(Discard()))
    tracing._tracer = tracing.provider.get_tracer("model_in_image")
    return tracing


def main() -> None:
    """測って表を表示する。"""
    with open(os.devnull, "wb") as devnull:
        traced = RequestTelemetry(None)
        traced.tracing = null_tracing()
        card = ModelCard.read(CARD)
        monitor = PredictionMonitor(
            CollectorRegistry(), card.classes, card.reference, window_rows=1000
        )
        features = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
        probabilities = np.array([[0.97, 0.02, 0.01]], dtype=np.float32)
        cases: dict[str, Callable[[], object]] = {
            "request ID + context (ACCESS_LOG=false)": request_cycle(RequestTelemetry(None)),
            "+ access log TEXT": request_cycle(
                RequestTelemetry(AccessLog(LogFormat.TEXT, stream=devnull))
            ),
            "+ access log JSON": request_cycle(
                RequestTelemetry(AccessLog(LogFormat.JSON, stream=devnull))
            ),
            "+ span (SDK, export discarded)": request_cycle(traced),
            "prediction monitor (1 row, flush amortised)": lambda: monitor.observe(
                features, probabilities
            ),
        }
        print(f"{'case':45s} {'µs/request':>10s}")
        for name, case in cases.items():
            best = min(timeit.repeat(case, number=NUMBER, repeat=5)) / NUMBER * 1e6
            print(f"{name:45s} {best:10.2f}")
        traced.tracing.shutdown()


if __name__ == "__main__":
    main()
