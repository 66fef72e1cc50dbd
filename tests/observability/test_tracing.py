"""トレース：OTEL_EXPORTER_OTLP_ENDPOINT があれば 1 リクエスト 1 スパンを OTLP/HTTP で送る。"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from benchmarks.sink import LocalSink
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from model_in_image.observability.tracing import traces_endpoint
from support.apps import SettingsFactory
from support.env import server_env
from support.paths import REPO_ROOT
from support.samples import JSON

from .conftest import Observe

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TWO_ROWS = b'{"data": [[5.1, 3.5, 1.4, 0.2], [6.3, 2.9, 5.6, 1.8]]}'


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSink]:
    """スパンを受け取る OTLP/HTTP の受け口（127.0.0.1）。バッチは 50 ms ごとに送らせる。"""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    with LocalSink(keep=True) as sink:
        yield sink


def received(sink: LocalSink) -> tuple[list[Span], list[dict[str, Any]]]:
    """受け取ったスパンと、それぞれのリソースの属性。"""
    spans: list[Span] = []
    resources: list[dict[str, Any]] = []
    for post in sink.bodies:
        assert (post.path, post.content_type) == ("/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest.FromString(post.body)
        for resource_spans in request.resource_spans:
            attributes = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
                resources.extend(attributes for _ in scope_spans.spans)
    return spans, resources


def _attributes(values: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in values:
        kind = item.value.WhichOneof("value")
        found[item.key] = getattr(item.value, kind)
    return found


def test_server_span_per_request_with_the_incoming_parent(
    observe: Observe, collector: LocalSink
) -> None:
    observed = observe(otel_exporter_otlp_endpoint=collector.url, log_format="JSON")
    headers = {**JSON, "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "X-Request-ID": "traced-1"}
    assert observed.client.post("/predict", content=TWO_ROWS, headers=headers).status_code == 200
    assert observed.client.get("/nope").status_code == 404
    lines = [json.loads(line) for line in observed.access_lines()]
    observed.close()  # 終了処理が残りのスパンを送る

    spans, resources = received(collector)
    assert len(spans) == 2
    child, root = sorted(spans, key=lambda span: span.name, reverse=True)
    assert child.trace_id.hex() == TRACE_ID
    assert child.parent_span_id.hex() == SPAN_ID
    assert child.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert child.name == "POST /predict"
    assert _attributes(child.attributes) == {
        "http.request.method": "POST",
        "http.route": "/predict",
        "http.response.status_code": 200,
        "request.id": "traced-1",
        "model.name": "iris_svc",
        "model.rows": 2,
    }
    assert child.end_time_unix_nano > child.start_time_unix_nano
    # traceparent の無いリクエストは新しいトレース。表にないパスの名前はメソッドだけ
    assert root.name == "GET"
    assert not root.parent_span_id
    assert _attributes(root.attributes)["http.response.status_code"] == 404
    assert "model.name" not in _attributes(root.attributes)
    # アクセスログのトレース ID はスパンと同じ
    assert [line["trace_id"] for line in lines] == [TRACE_ID, root.trace_id.hex()]
    assert resources[0]["service.name"] == "model-in-image"


def test_standard_otel_variables_are_honoured(
    observe: Observe, collector: LocalSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "iris-prod")
    observed = observe(otel_exporter_otlp_endpoint=collector.url)
    observed.client.get("/metadata")
    # OTEL_BSP_SCHEDULE_DELAY=50（ms）：終了を待たずに届く（既定の 5 秒なら間に合わない）
    assert collector.wait_for(1, timeout=2)
    observed.close()
    spans, resources = received(collector)
    assert [span.name for span in spans] == ["GET /metadata"]
    assert resources[0]["service.name"] == "iris-prod"


def test_sampler_from_the_environment(
    observe: Observe, collector: LocalSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    observed = observe(otel_exporter_otlp_endpoint=collector.url, log_format="JSON")
    headers = {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"}
    assert observed.client.get("/metadata", headers=headers).status_code == 200
    (line,) = observed.access_lines()
    observed.close()
    assert received(collector)[0] == []
    assert json.loads(line)["trace_id"] == TRACE_ID


def test_traces_endpoint_takes_precedence(make_settings: SettingsFactory) -> None:
    base = make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318/")
    assert traces_endpoint(base) == "http://127.0.0.1:4318/v1/traces"
    both = make_settings(
        otel_exporter_otlp_endpoint="http://127.0.0.1:4318",
        otel_exporter_otlp_traces_endpoint="http://127.0.0.1:9999/custom",
    )
    assert traces_endpoint(both) == "http://127.0.0.1:9999/custom"
    assert traces_endpoint(make_settings()) is None
    disabled = make_settings(
        otel_exporter_otlp_endpoint="http://127.0.0.1:4318", otel_sdk_disabled=True
    )
    assert not disabled.tracing_enabled


CHECK_NO_SDK = """
import sys
from fastapi.testclient import TestClient
from model_in_image.api.app import create_app
from model_in_image.settings import Settings
with TestClient(create_app(Settings())) as client:
    assert client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
    assert client.app.observability.telemetry.tracing is None
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk") or "otlp" in m)
print(loaded)
"""


def test_without_an_endpoint_the_sdk_is_never_imported() -> None:
    """設定が無ければ SDK も exporter も読み込まない（ホットパスは None の確認だけ）。"""
    result = subprocess.run(
        [sys.executable, "-c", CHECK_NO_SDK],
        cwd=REPO_ROOT,
        env=server_env({"ACCESS_LOG": "false"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
