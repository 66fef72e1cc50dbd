"""予測の監視：クラスの数・確信度・ドリフトの PSI・範囲外の値（/metrics）。"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from model_in_image.modelcard import FeatureReference, ReferenceStatistics
from model_in_image.observability.drift import SlidingWindow, population_stability_index
from model_in_image.observability.monitoring import CONFIDENCE_BUCKETS, PredictionMonitor, top_class
from support.iris import training_rows
from support.paths import LABEL_FILE, MODEL_FILE
from support.prometheus import by_label, samples, value
from support.samples import SETOSA, VERSICOLOR, VIRGINICA

from .conftest import Observe, Observed, post_predict

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SHIFTED = "petal length (cm)"
GOOD = 0.1
BAD = 0.25


def predict(observed: Observed, rows: Any, batch: int = 100) -> list[list[float]]:
    """rows を batch 行ずつ POST /predict し、確率を返す。"""
    probabilities: list[list[float]] = []
    for prediction in post_predict(observed, rows, batch):
        # シード API は 1 行なら平らな確率、複数行なら行ごとの確率を返す
        probabilities.extend(prediction if isinstance(prediction[0], list) else [prediction])
    return probabilities


def test_class_counters_and_confidence_histogram(observe: Observe) -> None:
    observed = observe()
    rows = [SETOSA, SETOSA, VERSICOLOR, VIRGINICA, VIRGINICA, VIRGINICA]
    probabilities = predict(observed, rows[:2], batch=1) + predict(observed, rows[2:], batch=4)
    text = observed.metrics()
    assert by_label(text, "model_predictions_total", "class") == {
        "setosa": 2.0,
        "versicolor": 1.0,
        "virginica": 3.0,
    }
    top = [max(p) for p in probabilities]
    assert value(text, "model_prediction_confidence_count") == 6
    assert value(text, "model_prediction_confidence_sum") == pytest.approx(sum(top), rel=1e-6)
    buckets = by_label(text, "model_prediction_confidence_bucket", "le")
    for bound in CONFIDENCE_BUCKETS:
        assert buckets[str(bound)] == sum(t <= bound for t in top), bound
    assert buckets["+Inf"] == 6


def test_psi_is_low_for_training_rows_and_high_for_a_shifted_feature(observe: Observe) -> None:
    observed = observe(drift_window_rows=1000)
    rows = training_rows(1000, seed=1)
    predict(observed, rows[:500])
    text = observed.metrics()
    assert samples(text, "model_feature_drift_psi") == {}  # 窓が埋まるまでは出さない
    assert value(text, "model_feature_drift_window_rows") == 500
    predict(observed, rows[500:])
    text = observed.metrics()
    psi = by_label(text, "model_feature_drift_psi", "feature")
    assert set(psi) == set(FEATURES)
    assert all(v < GOOD for v in psi.values()), psi
    assert set(by_label(text, "model_input_out_of_range_total", "feature").values()) == {0.0}
    assert "model_feature_drift_window_bin_rows" not in text  # 内部のゲージは出さない

    shifted = rows.copy()
    shifted[:, FEATURES.index(SHIFTED)] += 0.5
    predict(observed, shifted)  # 窓（1000 行）が同じ行の 1 特徴量だけずらしたものに入れ替わる
    text = observed.metrics()
    psi = by_label(text, "model_feature_drift_psi", "feature")
    assert psi[SHIFTED] > BAD, psi
    assert all(v < GOOD for name, v in psi.items() if name != SHIFTED), psi
    outside = by_label(text, "model_input_out_of_range_total", "feature")
    assert outside[SHIFTED] > 0
    assert all(v == 0 for name, v in outside.items() if name != SHIFTED), outside
    assert value(text, "model_feature_drift_window_rows") == 1000


def test_without_reference_statistics_drift_is_absent(observe: Observe, tmp_path: Path) -> None:
    model = Path(shutil.copy(MODEL_FILE, tmp_path / MODEL_FILE.name))
    labels = Path(shutil.copy(LABEL_FILE, tmp_path / LABEL_FILE.name))
    observed = observe(model_filepath=model, label_filepath=labels, drift_window_rows=10)
    assert observed.app.state.require().card is None
    predict(observed, training_rows(20))
    text = observed.metrics()
    assert sum(by_label(text, "model_predictions_total", "class").values()) == 20
    for absent in ("model_feature_drift_psi", "model_input_out_of_range_total"):
        assert samples(text, absent) == {}
    assert "model_feature_drift_window_rows" not in text


def test_monitoring_can_be_turned_off(observe: Observe) -> None:
    observed = observe(prediction_monitoring=False)
    predict(observed, [SETOSA])
    assert observed.app.state.require().listeners == ()
    assert "model_predictions_total" not in observed.metrics()


def test_monitoring_needs_metrics(observe: Observe) -> None:
    observed = observe(metrics_enabled=False)
    predict(observed, [SETOSA])
    assert observed.app.observability.monitor is None
    assert observed.client.get("/metrics").status_code == 404


# --- 部品 -------------------------------------------------------------------------


def test_psi_of_known_distributions() -> None:
    assert population_stability_index([10, 20, 70], [0.1, 0.2, 0.7]) == pytest.approx(0.0)
    expected = (0.5 - 0.25) * np.log(0.5 / 0.25) + (0.5 - 0.75) * np.log(0.5 / 0.75)
    assert population_stability_index([5, 5], [0.25, 0.75]) == pytest.approx(expected)
    # 空のビンは 0.0001 として数える（0 の対数を避ける）
    floor = (1e-4 - 0.5) * np.log(1e-4 / 0.5) + (1.0 - 0.5) * np.log(1.0 / 0.5)
    assert population_stability_index([0, 8], [0.5, 0.5]) == pytest.approx(floor)


def test_sliding_window_keeps_the_latest_rows() -> None:
    window = SlidingWindow(4, 1)
    window.extend(np.array([[1.0], [2.0], [3.0]]))
    assert sorted(window.rows()[:, 0]) == [1, 2, 3]
    window.extend(np.array([[4.0], [5.0]]))
    assert sorted(window.rows()[:, 0]) == [2, 3, 4, 5]
    window.extend(np.array([[6.0], [7.0], [8.0]]))
    assert sorted(window.rows()[:, 0]) == [5, 6, 7, 8]
    window.extend(np.arange(10, 20, dtype=np.float64).reshape(-1, 1))
    assert sorted(window.rows()[:, 0]) == [16, 17, 18, 19]


def _monitor(registry: CollectorRegistry, window_rows: int) -> PredictionMonitor:
    feature = FeatureReference(name="x", min=0, max=10, edges=[5.0], proportions=[0.5, 0.5])
    reference = ReferenceStatistics(rows=10, features=[feature])
    return PredictionMonitor(registry, ["a", "b"], reference, window_rows=window_rows)


def test_pending_predictions_are_invisible_to_the_gc() -> None:
    """積んだ配列は GC の追跡対象でない（完全 GC を呼ばない：docs/benchmarks.md）。"""
    monitor = _monitor(CollectorRegistry(), window_rows=100)
    features, probabilities = np.array([[1.0]]), np.array([[0.9, 0.1]])
    monitor.observe(features, probabilities)
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(2000):
            monitor.observe(np.array([[1.0]]), np.array([[0.9, 0.1]]))
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 50


@pytest.mark.parametrize("classes", [2, 3, 10, 40])
def test_top_class_equals_max_and_argmax_with_ties(classes: int) -> None:
    """列ごとの比較（少ないクラス）も argmax（多いクラス）も、同じ値なら最初の列を選ぶ。"""
    rng = np.random.default_rng(classes)
    probabilities = rng.dirichlet(np.ones(classes), 2000).astype(np.float32)
    probabilities[:10] = 1.0 / classes  # 全列が同じ
    probabilities[10:20] = 0.0
    probabilities[10:20, -2:] = 0.5  # 最後の 2 列が同じ
    top, index = top_class(probabilities)
    np.testing.assert_array_equal(top, probabilities.max(axis=1))
    np.testing.assert_array_equal(index, probabilities.argmax(axis=1))
    assert index[:10].tolist() == [0] * 10
    assert index[10:20].tolist() == [classes - 2] * 10


def test_a_model_without_class_probabilities_has_no_class_metrics() -> None:
    """回帰などのモデル：クラスの指標は作らず、値が 1 次元でも監視は失敗しない。"""
    registry = CollectorRegistry()
    reference = ReferenceStatistics.model_validate(
        {
            "rows": 3,
            "features": [
                {"name": "a", "min": 0.0, "max": 1.0, "edges": [0.5], "proportions": [0.5, 0.5]}
            ],
        }
    )
    monitor = PredictionMonitor(registry, None, reference, window_rows=10)
    monitor.observe(np.array([[0.2], [2.0]]), np.array([10.5, -3.0]))
    monitor.flush()
    names = {metric.name for metric in registry.collect()}
    assert not any("prediction" in name and "class" in name for name in names)
    outside = [s for m in registry.collect() for s in m.samples if "out_of_range" in s.name]
    assert sum(s.value for s in outside if s.name.endswith("_total")) == 1
