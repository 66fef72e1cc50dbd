"""アクセスログ：1 リクエスト 1 行（TEXT か JSON）、プローブの成功は既定で書かない。"""

from __future__ import annotations

import io
import json
import time

import pytest

from model_in_image.observability.access_log import CHUNK_BYTES, AccessLog
from model_in_image.observability.request_id import Exchange
from model_in_image.settings import LogFormat
from support.samples import JSON, PREDICT_BODY, V2_INFER

from .conftest import Observe

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
V2_BODY = (
    b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",'
    b' "data": [5.1, 3.5, 1.4, 0.2]}]}'
)


def test_json_line_for_a_request(observe: Observe) -> None:
    observed = observe(log_format="JSON")
    headers = {**JSON, "X-Request-ID": "req-1", "traceparent": TRACEPARENT}
    response = observed.client.post("/predict/label", content=PREDICT_BODY, headers=headers)
    assert response.status_code == 200
    (line,) = observed.access_lines()
    record = json.loads(line)
    assert record["request_id"] == "req-1"
    assert record["trace_id"] == TRACE_ID
    assert (record["method"], record["route"], record["path"]) == (
        "POST",
        "/predict/label",
        "/predict/label",
    )
    assert record["status"] == 200
    assert record["bytes"] == len(response.content)
    assert 0 < record["duration_ms"] < 10_000
    assert record["client"] == "testclient:50000"
    assert (record["level"], record["logger"]) == ("INFO", "model_in_image.access")
    assert record["message"] == "POST /predict/label 200"
    assert {"time", "process"} <= record.keys()


def test_json_line_names_the_route_template(observe: Observe) -> None:
    observed = observe(log_format="JSON")
    assert observed.client.post(V2_INFER, content=V2_BODY, headers=JSON).status_code == 200
    assert observed.client.get("/nope").status_code == 404
    infer, missing = (json.loads(line) for line in observed.access_lines())
    assert (infer["route"], infer["path"]) == ("/v2/models/{model_name}/infer", V2_INFER)
    assert infer["trace_id"] is None
    assert (missing["route"], missing["status"]) == ("unmatched", 404)


def test_text_line_per_request(observe: Observe) -> None:
    observed = observe()
    for _ in range(3):
        observed.client.post("/predict/label", content=PREDICT_BODY, headers=JSON)
    observed.client.head("/metadata")
    lines = observed.access_lines()
    assert len(lines) == 4
    assert sum("POST /predict/label" in line for line in lines) == 3
    first = lines[0]
    assert " INFO [model_in_image.access] [request_id=" in first
    assert '"POST /predict/label" 200 23B ' in first
    assert "trace_id" not in first
    assert '"HEAD /metadata" 200 0B ' in lines[3]


def test_probes_are_quiet_unless_they_fail(observe: Observe) -> None:
    observed = observe()
    for path in ("/livez", "/readyz", "/health", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert observed.client.get(path).status_code == 200
    assert observed.access_lines() == []
    observed.app.state.draining = True
    assert observed.client.get("/readyz").status_code == 503
    (line,) = observed.access_lines()
    assert '"GET /readyz" 503 ' in line


def test_probes_are_logged_when_asked(observe: Observe) -> None:
    observed = observe(access_log_probes=True)
    observed.client.get("/livez")
    observed.client.get("/metrics")
    assert len(observed.access_lines()) == 2


def test_access_log_off(observe: Observe) -> None:
    observed = observe(access_log=False)
    assert observed.app.observability.telemetry.access_log is None
    response = observed.client.post("/predict", content=PREDICT_BODY, headers=JSON)
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    assert observed.stream.getvalue() == b""


def test_timer_writes_lines_without_a_flush(observe: Observe) -> None:
    observed = observe()
    observed.client.get("/metadata")
    deadline = time.monotonic() + 5
    while not observed.stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b'"GET /metadata" 200' in observed.stream.getvalue()


class _Recorder(io.BytesIO):
    """write の大きさを記録する。"""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sizes.append(len(data))
        return super().write(data)


async def _send(_: object) -> None:
    """送らない。"""


def _exchange(path: bytes = b"/predict", request_id: str = "id", sent: int = 10) -> Exchange:
    scope = {"method": "POST", "path": path.decode("latin-1"), "raw_path": path, "client": None}
    exchange = Exchange(scope, _send, request_id, request_id.encode(), None)
    exchange.sent = sent
    return exchange


@pytest.mark.parametrize("fmt", list(LogFormat))
def test_writes_are_batched_below_pipe_buf(fmt: LogFormat) -> None:
    stream = _Recorder()
    access_log = AccessLog(fmt, stream=stream)
    for i in range(300):
        access_log.record(_exchange(request_id=f"id-{i}"), "/predict", 200, 0.001)
    access_log.flush()
    assert len(stream.getvalue().splitlines()) == 300
    assert max(stream.sizes) <= CHUNK_BYTES
    assert len(stream.sizes) < 300 / 10


def test_path_is_logged_as_received() -> None:
    stream = io.BytesIO()
    access_log = AccessLog(LogFormat.TEXT, stream=stream)
    access_log.record(_exchange(b"/a%0Ab/\xc3\xa9", sent=0), "unmatched", 404, 0.001)
    access_log.flush()
    (line,) = stream.getvalue().decode().splitlines()
    assert line.endswith(' [request_id=id] - "POST /a%0Ab/\\xc3\\xa9" 404 0B 1.00ms')


def test_broken_stream_does_not_raise() -> None:
    stream = io.BytesIO()
    stream.close()
    access_log = AccessLog(LogFormat.JSON, stream=stream)
    access_log.record(_exchange(), "/predict", 200, 0.001)
    access_log.flush()
    access_log.flush()
