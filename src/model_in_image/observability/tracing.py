"""OpenTelemetry のトレース：OTEL_EXPORTER_OTLP_ENDPOINT があるときだけ、1 リクエスト 1 スパン。

SDK と OTLP/HTTP の exporter は設定されたときにだけ import する（無ければ起動時間も増えない）。
スパンは SDK の BatchSpanProcessor が別スレッドで送る（リクエストは送信を待たない）。
サービス名・サンプラー・バッチの間隔などは標準の OTEL_* 変数を SDK がそのまま読む。
"""

from __future__ import annotations

import logging
from typing import Any

from model_in_image.observability.request_id import CURRENT, Exchange
from model_in_image.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "model-in-image"
TRACES_PATH = "/v1/traces"


def traces_endpoint(settings: Settings) -> str | None:
    """スパンの送り先（OTEL_EXPORTER_OTLP_TRACES_ENDPOINT、無ければ ENDPOINT + /v1/traces）。"""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + TRACES_PATH
    return None


class Tracing:
    """サーバースパンを作って閉じる。"""

    def __init__(self, endpoint: str, model_name: str) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create()  # OTEL_SERVICE_NAME・OTEL_RESOURCE_ATTRIBUTES を読む
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        # サンプラーは OTEL_TRACES_SAMPLER(_ARG)、バッチは OTEL_BSP_* を SDK が読む
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self.provider.get_tracer("model_in_image")
        self._trace = trace
        self._server = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)
        self.model_name = model_name
        logger.info("tracing: OTLP/HTTP spans to %s", endpoint)

    def start(self, exchange: Exchange, tracestate: bytes | None) -> None:
        """スパンを始める（traceparent があればその子）。トレース ID を exchange に記録する。"""
        trace = self._trace
        parent = exchange.parent
        context = None
        if parent is not None:
            state = (
                trace.TraceState.from_header([tracestate.decode("latin-1")]) if tracestate else None
            )
            remote = trace.SpanContext(
                int(parent.trace_id, 16),
                int(parent.span_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(parent.flags),
                trace_state=state,
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self._tracer.start_span(exchange.scope["method"], context=context, kind=self._server)
        exchange.span = span
        exchange.trace_id = format(span.get_span_context().trace_id, "032x")

    def observe(self, features: Any, _: Any) -> None:
        """推論の行数を処理中のリクエストのスパンに足す（データプレーンのリスナー）。"""
        exchange = CURRENT.get()
        if exchange is not None:
            exchange.rows += len(features)

    def end(self, exchange: Exchange, route: str, status: int) -> None:
        """ルートのテンプレート・ステータス・モデル名・行数を付けてスパンを閉じる。"""
        span = exchange.span
        if span is None or not span.is_recording():  # サンプラーが落としたスパンは送られない
            return
        method = exchange.scope["method"]
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.response.status_code": status,
            "request.id": exchange.request_id,
        }
        if route.startswith("/"):  # 表にないパスはテンプレートが無い：名前はメソッドだけ
            span.update_name(f"{method} {route}")
            attributes["http.route"] = route
        if exchange.rows:
            attributes["model.name"] = self.model_name
            attributes["model.rows"] = exchange.rows
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        """残りのスパンを送って止める（終了時）。"""
        self.provider.shutdown()


def configure_tracing(settings: Settings, model_name: str) -> Tracing | None:
    """設定されていればトレースを用意する（無ければ None：ホットパスは None の確認だけ）。"""
    endpoint = traces_endpoint(settings)
    if endpoint is None or not settings.tracing_enabled:
        return None
    return Tracing(endpoint, model_name)
