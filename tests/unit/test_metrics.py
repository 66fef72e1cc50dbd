"""メトリクスの積み方：まとめて反映しても 1 件ずつと同じ値になり、GC に負担をかけない。"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from model_in_image.metrics import LATENCY_BUCKETS, Metrics, observe_many


def _metrics() -> Metrics:
    return Metrics(model_name="iris_svc", model_sha256="0" * 64, version="test")


def _value(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_observe_many_equals_observe_one_by_one() -> None:
    values = [0.0001, 0.0002, 0.0003, 0.001, 0.05, 2.0, 0.0002]
    one = Histogram("one", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    many = Histogram("many", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for value in values:
        one.observe(value)
    observe_many(many, values)
    assert [b.get() for b in one._buckets] == [b.get() for b in many._buckets]
    assert one._sum.get() == many._sum.get()


def test_observe_many_takes_a_numpy_array() -> None:
    values = np.array([0.05, 0.2, 0.2, 0.999, 1.0], dtype=np.float32)
    one = Histogram("one", "x", buckets=(0.1, 0.5, 1.0), registry=CollectorRegistry())
    many = Histogram("many", "x", buckets=(0.1, 0.5, 1.0), registry=CollectorRegistry())
    for value in values.tolist():
        one.observe(value)
    observe_many(many, values)
    assert [b.get() for b in one._buckets] == [b.get() for b in many._buckets] == [1, 2, 2, 0]
    assert many._sum.get() == pytest.approx(one._sum.get())


def test_flush_reports_counts_latency_and_inference() -> None:
    metrics = _metrics()
    for status in (200, 200, 422):
        metrics.observe_request("/predict", "POST", status, 0.0003)
    metrics.observe_inference(64, 0.00005)
    metrics.flush()
    ok = {"route": "/predict", "method": "POST", "status": "200"}
    assert _value(metrics, "model_in_image_requests_total", ok) == 2
    assert _value(metrics, "model_in_image_requests_total", {**ok, "status": "422"}) == 1
    timing = {"route": "/predict", "method": "POST"}
    assert _value(metrics, "model_in_image_request_duration_seconds_count", timing) == 3
    assert _value(metrics, "model_in_image_inference_batch_rows_sum", {}) == 64
    metrics.flush()  # 何も積んでいなければ値は変わらない
    assert _value(metrics, "model_in_image_requests_total", ok) == 2


def test_pending_observations_allocate_no_gc_tracked_objects() -> None:
    """積んだ観測値が GC の追跡対象を増やさない（増やすと完全 GC が頻発し、p99 が跳ねた）。"""
    metrics = _metrics()
    metrics.observe_request("/predict", "POST", 200, 0.0003)
    metrics.observe_inference(1, 0.00002)
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(2000):
            metrics.observe_request("/predict", "POST", 200, 0.0003)
            metrics.observe_inference(1, 0.00002)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 50
