"""予測ログ：抽出した推論を CloudEvents で標準出力か HTTP へ。キューが満杯でもリクエストは 200。"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable

import numpy as np
from benchmarks.sink import LocalSink
from prometheus_client import CollectorRegistry

from model_in_image.observability.prediction_log import (
    CONTENT_TYPE,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    HttpSink,
    PredictionLog,
    Sink,
    StreamSink,
)
from support.net import free_port
from support.prometheus import by_label, value
from support.samples import JSON, PREDICT_BODY, VIRGINICA

from .conftest import Observe, Observed

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# 「止まらない」の判定：受け口の期限（10 秒）より十分短く、目標（すぐ）の 5 倍以上の余裕
FAST_SECONDS = 5.0


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """check() が真になるまで待つ（時間切れなら失敗）。"""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def dropped(observed: Observed) -> dict[str, float]:
    """理由ごとの捨てた数。"""
    return by_label(observed.metrics(), "model_prediction_log_dropped_total", "reason")


def test_sampled_predictions_are_written_to_stdout_as_cloudevents(observe: Observe) -> None:
    observed = observe(prediction_log_sample_rate=1.0)
    log = observed.app.observability.prediction_log
    assert log is not None
    stream = io.BytesIO()
    log.sink = StreamSink(stream)
    headers = {**JSON, "X-Request-ID": "sampled-1", "traceparent": TRACEPARENT}
    body = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2], VIRGINICA]})
    response = observed.client.post("/predict", content=body, headers=headers)
    assert response.status_code == 200
    wait_until(lambda: stream.getvalue().count(b"\n") == 2)
    request, answer = (json.loads(line) for line in stream.getvalue().splitlines())
    for event in (request, answer):
        assert event["specversion"] == "1.0"
        assert event["id"] == "sampled-1"
        assert event["source"] == "model-in-image/iris_svc"
        assert event["datacontenttype"] == "application/json"
        assert event["inferenceservicename"] == "iris_svc"
        assert event["traceparent"] == TRACEPARENT
        assert event["time"].endswith("Z")
    assert (request["type"], answer["type"]) == (REQUEST_TYPE, RESPONSE_TYPE)
    assert np.allclose(request["data"]["instances"], [[5.1, 3.5, 1.4, 0.2], VIRGINICA])
    assert np.allclose(answer["data"]["predictions"], response.json()["prediction"])
    assert answer["data"]["labels"] == ["setosa", "virginica"]
    assert value(observed.metrics(), "model_prediction_log_events_total") == 2


def test_events_are_posted_to_the_http_sink(observe: Observe) -> None:
    with LocalSink(keep=True) as sink:
        observed = observe(prediction_log_sample_rate=1.0, prediction_log_url=f"{sink.url}/events")
        for _ in range(3):
            assert observed.client.post("/predict", content=PREDICT_BODY, headers=JSON).is_success
        assert sink.wait_for(6, timeout=10)
        observed.close()
    assert {(post.path, post.content_type) for post in sink.bodies} == {("/events", CONTENT_TYPE)}
    types = [json.loads(post.body)["type"] for post in sink.bodies]
    assert types == [REQUEST_TYPE, RESPONSE_TYPE] * 3


def test_full_queue_drops_and_counts_without_blocking(observe: Observe) -> None:
    with LocalSink() as sink, sink.hold():
        observed = observe(
            prediction_log_sample_rate=1.0,
            prediction_log_url=sink.url,
            prediction_log_queue_size=1,
        )
        for _ in range(6):
            started = time.monotonic()
            response = observed.client.post("/predict", content=PREDICT_BODY, headers=JSON)
            assert response.status_code == 200
            assert time.monotonic() - started < FAST_SECONDS
        # 1 件は送信中（受け口が止まっている）、1 件はキューの中：残り 4 件以上は捨てた
        assert dropped(observed)["queue_full"] >= 4
        assert sink.wait_for(1, timeout=5)


def test_unreachable_sink_is_counted_not_raised(observe: Observe) -> None:
    observed = observe(
        prediction_log_sample_rate=1.0, prediction_log_url=f"http://127.0.0.1:{free_port()}/"
    )
    for _ in range(2):
        assert (
            observed.client.post("/predict", content=PREDICT_BODY, headers=JSON).status_code == 200
        )
    wait_until(lambda: dropped(observed)["sink_error"] == 2)


def test_sample_rate_zero_adds_no_listener(observe: Observe) -> None:
    observed = observe()
    assert observed.app.observability.prediction_log is None
    assert "model_prediction_log" not in observed.metrics()


def _log(
    sink: Sink, registry: CollectorRegistry, *, rate: float, queue_size: int = 10
) -> PredictionLog:
    return PredictionLog(
        sink,
        sample_rate=rate,
        queue_size=queue_size,
        model_name="m",
        labels=["a", "b"],
        registry=registry,
    )


ROW, PROBABILITIES = np.array([[1.0, 2.0]]), np.array([[0.2, 0.8]])


def test_sampling_follows_the_rate() -> None:
    stream = io.BytesIO()
    log = _log(StreamSink(stream), CollectorRegistry(), rate=0.5)
    draws = iter([0.1, 0.5, 0.9, 0.49])
    log._random = lambda: next(draws)  # 乱数の代わりに決まった値
    log.start()
    for _ in range(4):
        log.observe(ROW, PROBABILITIES)
    log.stop()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(events) == 4  # 0.1 と 0.49 が当たり、1 回につき 2 イベント
    assert events[1]["data"] == {"predictions": [[0.2, 0.8]], "labels": ["b"]}
    assert len(events[0]["id"]) == 32  # リクエストの外では ID を作る
    assert "traceparent" not in events[0]


def test_stop_gives_up_on_a_stuck_sink() -> None:
    registry = CollectorRegistry()
    with LocalSink() as sink, sink.hold():
        log = _log(HttpSink(sink.url, timeout=10), registry, rate=1.0, queue_size=5)
        log.start()
        for _ in range(4):
            log.observe(ROW, PROBABILITIES)
        assert sink.wait_for(1, timeout=5)  # 1 件目は送信中のまま止まる
        started = time.monotonic()
        log.stop(timeout=0.3)
        # 目標 0.3 秒、判定は 5 倍以上の余裕（止まった受け口の期限 10 秒よりは短い）
        assert time.monotonic() - started < 5
    reason = {"reason": "shutdown"}
    assert registry.get_sample_value("model_prediction_log_dropped_total", reason) == 3
