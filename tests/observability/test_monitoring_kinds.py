"""種類ごとの監視：回帰の予測のヒストグラムと PSI。監視できない入力のモデルも提供を続ける。"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from model_in_image.card import create_card, write_card
from model_in_image.modelcard import (
    FeatureReference,
    ModelCard,
    PredictionReference,
    ReferenceStatistics,
    bin_counts,
)
from model_in_image.observability.drift import population_stability_index
from model_in_image.observability.monitoring import PredictionMonitor
from model_in_image.observability.prediction_drift import RegressionMonitor, prediction_buckets
from support.prometheus import by_label, samples, value
from support.regressors import Regressor, linear_regression, normal_rows
from support.samples import JSON
from support.zoo import cases, load_case

from .conftest import Observe, Observed, exposed_families, post_predict

GOOD = 0.1
BAD = 0.25
WINDOW = 1000
NO_INPUT_DRIFT = "input drift monitoring needs one float input [N, width]"


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> Regressor:
    """参照データ 2000 行のカード（入力と予測の参照分布）を隣に置いた回帰モデル。"""
    made = linear_regression(tmp_path_factory.mktemp("regressor"), rows=2000)
    card = create_card(made.model, None, reference=made.reference)
    write_card(card, made.model.with_name("model_card.json"), force=True)
    return made


def serve(observe: Observe, model: Path, **overrides: Any) -> Observed:
    """ラベルファイル無しでモデルを提供する（カードはモデルの隣の model_card.json）。"""
    return observe(model_filepath=model, label_filepath=None, **overrides)


def predict(observed: Observed, rows: Any, batch: int = 100) -> np.ndarray[Any, Any]:
    """rows を batch 行ずつ POST /predict し、予測値を返す。"""
    values: list[Any] = []
    for prediction in post_predict(observed, rows, batch):
        values.extend(prediction if isinstance(prediction, list) else [prediction])
    return np.asarray(values, dtype=np.float64)


def prediction_psi(text: str) -> dict[str, float]:
    """/metrics の予測の PSI（目的変数 → PSI）。"""
    return by_label(text, "model_prediction_drift_psi", "target")


class TestRegressor:
    def test_psi_is_low_for_the_same_distribution_and_high_after_a_one_sd_shift(
        self, observe: Observe, regressor: Regressor
    ) -> None:
        observed = serve(observe, regressor.model, drift_window_rows=WINDOW)
        rows = normal_rows(WINDOW, seed=1)
        predict(observed, rows[: WINDOW // 2])
        text = observed.metrics()
        assert prediction_psi(text) == {}  # 窓が埋まるまでは出さない
        assert value(text, "model_prediction_drift_window_rows") == WINDOW // 2
        predict(observed, rows[WINDOW // 2 :])
        text = observed.metrics()
        same = prediction_psi(text)
        assert set(same) == {"prediction"}
        assert same["prediction"] < GOOD, same
        features = by_label(text, "model_feature_drift_psi", "feature")  # 入力のドリフトも
        assert set(features) == {"f0", "f1", "f2", "f3"}
        assert all(v < GOOD for v in features.values()), features
        assert "model_prediction_drift_window_bin_rows" not in text  # 内部のゲージは出さない

        predict(observed, rows + regressor.one_sd_shift())  # 窓が入れ替わる
        text = observed.metrics()
        shifted = prediction_psi(text)
        assert shifted["prediction"] > BAD, shifted
        assert value(text, "model_prediction_drift_window_rows") == WINDOW

    def test_psi_equals_the_window_against_the_card(
        self, observe: Observe, regressor: Regressor
    ) -> None:
        observed = serve(observe, regressor.model, drift_window_rows=100)
        served = predict(observed, normal_rows(250, seed=2) * 1.5)
        card = ModelCard.read(regressor.model.with_name("model_card.json"))
        assert card.prediction_reference is not None
        (target,) = card.prediction_reference.targets
        expected = population_stability_index(
            bin_counts(target.edges, served[-100:]), target.proportions
        )
        assert prediction_psi(observed.metrics())["prediction"] == pytest.approx(expected, abs=1e-9)

    def test_the_prediction_histogram_uses_the_reference_bins(
        self, observe: Observe, regressor: Regressor
    ) -> None:
        observed = serve(observe, regressor.model)
        served = predict(observed, normal_rows(300, seed=3), batch=7)
        text = observed.metrics()
        card = ModelCard.read(regressor.model.with_name("model_card.json"))
        assert card.prediction_reference is not None
        bounds = prediction_buckets(card.prediction_reference)
        buckets = {
            labels: count
            for labels, count in samples(text, "model_prediction_value_bucket").items()
            if dict(labels)["target"] == "prediction"
        }
        by_bound = {dict(labels)["le"]: count for labels, count in buckets.items()}
        assert len(by_bound) == len(bounds) + 1  # 参照のビンの境界と最大値、+Inf
        for bound in bounds:
            assert by_bound[repr(bound)] == np.count_nonzero(served <= bound), bound
        assert by_bound["+Inf"] == 300
        count = by_label(text, "model_prediction_value_count", "target")
        assert count == {"prediction": 300}
        # prometheus-client は負の境界のあるヒストグラムに _sum を出さない（OpenMetrics の規則）
        assert bounds[0] < 0
        assert samples(text, "model_prediction_value_sum") == {}
        assert "model_predictions_total" not in text  # クラスの指標は無い

    def test_each_output_value_is_a_target(self, observe: Observe, tmp_path: Path) -> None:
        made = linear_regression(tmp_path, rows=500, targets=2)
        card = create_card(made.model, None, reference=made.reference)
        write_card(card, made.model.with_name("model_card.json"), force=True)
        observed = serve(observe, made.model, drift_window_rows=100)
        served = predict(observed, normal_rows(100, seed=4))
        assert served.shape == (100, 2)
        text = observed.metrics()
        assert set(prediction_psi(text)) == {"prediction_0", "prediction_1"}
        assert by_label(text, "model_prediction_value_count", "target") == {
            "prediction_0": 100,
            "prediction_1": 100,
        }

    def test_a_card_that_does_not_fit_turns_prediction_drift_off(
        self,
        observe: Observe,
        regressor: Regressor,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        model = Path(shutil.copy(regressor.model, tmp_path / "price.onnx"))
        card = ModelCard.read(regressor.model.with_name("model_card.json"))
        assert card.prediction_reference is not None
        (target,) = card.prediction_reference.targets
        renamed = card.prediction_reference.model_copy(
            update={"targets": [target.model_copy(update={"name": "price"})]}
        )
        card.model_copy(update={"prediction_reference": renamed}).write(
            tmp_path / "model_card.json"
        )
        with caplog.at_level(logging.WARNING):
            observed = serve(observe, model, drift_window_rows=10)
        assert "targets ['price'] but the model's predictions give ['prediction']" in caplog.text
        assert "prediction drift is off" in caplog.text
        predict(observed, normal_rows(20, seed=5))
        text = observed.metrics()
        assert "model_prediction_value" not in text
        assert by_label(text, "model_feature_drift_psi", "feature")  # 入力のドリフトは続く

    def test_without_a_card_a_regressor_is_served_without_prediction_metrics(
        self, observe: Observe
    ) -> None:
        case = load_case("sklearn_linear_regression")
        observed = serve(observe, case.model, drift_window_rows=10)
        predict(observed, case.rows)
        assert "model_prediction_value" not in observed.metrics()


@pytest.mark.parametrize("name", cases("regressor"))
def test_zoo_regressors_get_a_prediction_reference(
    observe: Observe, tmp_path: Path, name: str
) -> None:
    """ほかのフレームワークの回帰（[N] と [N, 1] の出力）：カードの予測の参照分布と監視。"""
    case = load_case(name)
    model = Path(shutil.copy(case.model, tmp_path / case.model.name))
    reference = tmp_path / "reference.csv"
    reference.write_text("\n".join(",".join(map(repr, row)) for row in case.rows) + "\n")
    card = create_card(model, None, reference=reference)
    assert card.prediction_reference is not None
    assert [t.name for t in card.prediction_reference.targets] == ["prediction"]
    write_card(card, tmp_path / "model_card.json", force=True)
    observed = serve(observe, model, drift_window_rows=10)
    predict(observed, case.rows * 2)
    text = observed.metrics()
    assert by_label(text, "model_prediction_value_count", "target") == {"prediction": 12}
    assert set(prediction_psi(text)) == {"prediction"}
    assert prediction_psi(text)["prediction"] < GOOD  # 参照と同じ行


@pytest.mark.parametrize(
    ("name", "classes"),
    [
        ("sklearn_column_transformer", True),  # 入力 3 つ（実数 2、文字列 1）
        ("sklearn_tfidf_text", True),  # 文字列の入力
        ("sklearn_int64_counts", True),  # 整数の入力
        ("torch_embedding", False),  # 整数の入力のロジットのネット
    ],
)
def test_models_without_one_float_input_are_served_with_monitoring_on(
    observe: Observe, caplog: pytest.LogCaptureFixture, name: str, classes: bool
) -> None:
    case = load_case(name)
    with caplog.at_level(logging.WARNING):
        observed = serve(observe, case.model)
    warnings = [r for r in caplog.records if NO_INPUT_DRIFT in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert warnings[0].levelno == logging.WARNING
    assert case.inputs[0]["name"] in warnings[0].getMessage()
    for _ in range(3):
        body = orjson.dumps({"data": case.rows})
        response = observed.client.post("/predict", content=body, headers=JSON)
        assert response.status_code == 200, response.text
    text = observed.metrics()
    predicted = by_label(text, "model_predictions_total", "class")
    assert sum(predicted.values()) == (3 * len(case.rows) if classes else 0)
    assert "model_feature_drift" not in text
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), caplog.text


BINS = {"min": 0.0, "max": 10.0, "edges": [5.0], "proportions": [0.5, 0.5]}


def _feature_monitor(registry: CollectorRegistry) -> PredictionMonitor:
    reference = ReferenceStatistics(rows=10, features=[FeatureReference(name="x", **BINS)])
    return PredictionMonitor(registry, ["a", "b"], reference, window_rows=4)


def _prediction_monitor(registry: CollectorRegistry) -> RegressionMonitor:
    reference = PredictionReference(rows=10, targets=[FeatureReference(name="prediction", **BINS)])
    return RegressionMonitor(registry, reference, window_rows=4)


def _observe(monitor: PredictionMonitor | RegressionMonitor, values: list[float]) -> None:
    column = np.array(values).reshape(-1, 1)
    if isinstance(monitor, PredictionMonitor):
        monitor.observe(column, np.array([[0.9, 0.1]] * len(values)))
    else:
        monitor.observe(None, column.reshape(-1))
    monitor.flush()


@pytest.mark.parametrize(
    ("make", "metric", "label"),
    [
        (_feature_monitor, "model_feature_drift", {"feature": "x"}),
        (_prediction_monitor, "model_prediction_drift", {"target": "prediction"}),
    ],
)
def test_psi_is_computed_from_the_sum_of_all_windows(
    make: Any, metric: str, label: dict[str, str]
) -> None:
    """ワーカー 2 つの窓（各々は偏っている）を合わせた分布から PSI を出す（入力も予測も）。"""
    first, second = CollectorRegistry(), CollectorRegistry()
    one, two = make(first), make(second)
    _observe(one, [1.0, 2.0, 3.0, 4.0])  # 全部が下のビン
    _observe(two, [6.0, 7.0, 8.0, 9.0])  # 全部が上のビン
    families = exposed_families(one, first, second)
    assert families[f"{metric}_window_rows"].samples[0].value == 8
    (psi,) = families[f"{metric}_psi"].samples
    assert psi.labels == label
    assert psi.value == pytest.approx(0.0)  # 合わせれば参照と同じ 50 % / 50 %
    assert f"{metric}_window_bin_rows" not in families  # 内部のゲージは出さない
    assert exposed_families(one, first)[f"{metric}_psi"].samples[0].value > BAD
