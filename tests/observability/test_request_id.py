"""リクエスト ID：X-Request-ID を返し（無ければ作る）、すべての応答とそのリクエストのログに付く。"""

from __future__ import annotations

import json
import logging
import logging.config
import re

import pytest

from model_in_image.loading import load_dataplane
from model_in_image.logconfig import logging_config
from model_in_image.observability.request_id import (
    MAX_REQUEST_ID_LENGTH,
    RequestIds,
    TraceParent,
    accept_request_id,
    parse_traceparent,
)
from model_in_image.settings import LogFormat, LogLevel
from support.apps import SettingsFactory, SpyModel
from support.samples import JSON, PREDICT_BODY

from .conftest import Observe

GENERATED = re.compile(r"[0-9a-f]{32}")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/predict/label", PREDICT_BODY, 200),
        ("POST", "/predict", b'{"data": [[1, 2]]}', 422),
        ("POST", "/predict", b"{", 400),
        ("GET", "/predict", None, 405),
        ("GET", "/nope", None, 404),
        ("HEAD", "/health", None, 200),
        ("GET", "/docs", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/v2/models/iris_svc", None, 200),
        ("GET", "/v2/models/unknown", None, 404),
    ],
)
def test_given_id_is_echoed_on_every_response(
    observe: Observe, method: str, path: str, body: bytes | None, status: int
) -> None:
    observed = observe()
    headers = {**JSON, "X-Request-ID": "order-42/line-7"}
    response = observed.client.request(method, path, content=body, headers=headers)
    assert response.status_code == status
    assert response.headers["x-request-id"] == "order-42/line-7"
    assert response.headers.get_list("x-request-id") == ["order-42/line-7"]


def test_ids_are_generated_when_absent(observe: Observe) -> None:
    client = observe().client
    ids = [client.get("/health").headers["x-request-id"] for _ in range(3)]
    assert all(GENERATED.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    "given",
    [
        b"x" * (MAX_REQUEST_ID_LENGTH + 1),
        b"with space",
        b"tab\there",
        "caf\u00e9".encode(),
        b"\x7f",
        b"",
    ],
)
def test_unacceptable_ids_are_replaced(observe: Observe, given: bytes) -> None:
    response = observe().client.get("/health", headers={"X-Request-ID": given})
    assert response.status_code == 200
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_longest_printable_id_is_kept() -> None:
    assert accept_request_id(b"~" * MAX_REQUEST_ID_LENGTH)
    assert accept_request_id(b'!"#$%&()*+,-./:;<=>?@[]^_`{|}')


def test_generated_ids_differ_between_generators() -> None:
    first, second = RequestIds(), RequestIds()
    assert first() != second()
    assert first()[:16] == first()[:16]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT.encode(), TraceParent(TRACE_ID, SPAN_ID, 1)),
        (f" 00-{TRACE_ID}-{SPAN_ID}-00 ".encode(), TraceParent(TRACE_ID, SPAN_ID, 0)),
        # 将来の版は後ろに項目が足されていてもよい
        (f"01-{TRACE_ID}-{SPAN_ID}-01-extra".encode(), TraceParent(TRACE_ID, SPAN_ID, 1)),
        (f"00-{TRACE_ID}-{SPAN_ID}-01-extra".encode(), None),
        (f"ff-{TRACE_ID}-{SPAN_ID}-01".encode(), None),
        (f"00-{'0' * 32}-{SPAN_ID}-01".encode(), None),
        (f"00-{TRACE_ID}-{'0' * 16}-01".encode(), None),
        (f"00-{TRACE_ID.upper()}-{SPAN_ID}-01".encode(), None),
        (f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01".encode(), None),
        (b"garbage", None),
    ],
)
def test_traceparent_follows_w3c(header: bytes, expected: TraceParent | None) -> None:
    assert parse_traceparent(header) == expected


def test_traceparent_header_round_trips() -> None:
    parsed = parse_traceparent(TRACEPARENT.encode())
    assert parsed is not None
    assert parsed.header == TRACEPARENT


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", [LogFormat.JSON, LogFormat.TEXT])
def test_log_lines_of_a_request_carry_its_id(
    observe: Observe,
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fmt: LogFormat,
) -> None:
    monkeypatch.setattr("model_in_image.loading.OnnxModel", SpyModel)
    dataplane = load_dataplane(make_settings())
    observed = observe(dataplane, log_format=fmt.value)
    logging.config.dictConfig(logging_config(LogLevel.INFO, fmt))
    spy = dataplane.model
    assert isinstance(spy, SpyModel)
    spy.failures = 1
    capsys.readouterr()
    headers = {**JSON, "X-Request-ID": "broken-1"}
    assert (
        observed.client.post("/predict", content=PREDICT_BODY, headers=headers).status_code == 500
    )
    logging.getLogger("model_in_image.test").warning("outside any request")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    error = next(line for line in lines if "unhandled error on POST /predict" in line)
    outside = next(line for line in lines if "outside any request" in line)
    if fmt is LogFormat.JSON:
        assert json.loads(error)["request_id"] == "broken-1"
        assert "request_id" not in json.loads(outside)
    else:
        assert "[model_in_image.transport.dispatcher] [request_id=broken-1] unhandled" in error
        assert "request_id" not in outside
