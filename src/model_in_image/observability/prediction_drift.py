"""回帰モデルの予測の監視（/metrics）：予測値のヒストグラムと、予測の分布のドリフト（PSI）。

基準はモデルカードの prediction_reference（参照データの行での予測の分位点のビン）。
入力のドリフトと同じく、リクエストごとには値の配列への参照を積むだけで、ヒストグラムと
窓への反映はまとめて行い（Metrics.flush と同じ時）、PSI は全ワーカーの合計から計算する（drift.py）。
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from model_in_image.metrics import observe_many
from model_in_image.modelcard import PredictionReference
from model_in_image.observability.drift import DriftMetrics, WindowDrift
from model_in_image.observability.monitoring import MAX_PENDING_ARRAYS, MAX_PENDING_ROWS
from model_in_image.runtime import FloatArray

VALUE = "model_prediction_value"
DRIFT_PSI = "model_prediction_drift_psi"
WINDOW_ROWS = "model_prediction_drift_window_rows"
WINDOW_BINS = "model_prediction_drift_window_bin_rows"  # 内部：窓のビンごとの行数（出力しない）
PREDICTION_DRIFT = DriftMetrics("target", DRIFT_PSI, WINDOW_ROWS, WINDOW_BINS, "予測の目的変数")


def prediction_buckets(reference: PredictionReference) -> list[float]:
    """予測値のヒストグラムのバケット：参照分布のビンの境界と最大値（目的変数すべての和集合）。"""
    bounds = {edge for target in reference.targets for edge in target.edges}
    bounds.update(target.max for target in reference.targets)
    return sorted(bounds)


class RegressionMonitor:
    """回帰の予測の監視（observe はリスナー、flush と transform は Metrics の拡張）。"""

    def __init__(
        self, registry: CollectorRegistry, reference: PredictionReference, *, window_rows: int
    ) -> None:
        self.reference = reference
        self.drift = WindowDrift(
            registry, reference.targets, PREDICTION_DRIFT, window_rows=window_rows
        )
        self.targets = self.drift.columns
        histogram = Histogram(
            VALUE,
            "回帰の予測値（バケットはモデルカードの予測の参照分布のビンの境界と最大値）",
            ["target"],
            buckets=prediction_buckets(reference),
            registry=registry,
        )
        self._histograms = [histogram.labels(name) for name in self.targets]
        self._values: list[FloatArray] = []
        self._pending_rows = 0

    def observe(self, features: Any, values: FloatArray) -> None:
        """推論 1 回の予測値を積む（参照だけ、コピーも計算もしない）。入力は使わない。"""
        self._values.append(values)
        self._pending_rows += len(values)
        if len(self._values) >= MAX_PENDING_ARRAYS or self._pending_rows >= MAX_PENDING_ROWS:
            self.flush()

    def flush(self) -> None:
        """積んだ予測値をヒストグラムに反映し、ドリフトの窓を進める。"""
        if not self._values:
            return
        values = np.concatenate(self._values).astype(np.float64, copy=False)
        self._values.clear()
        self._pending_rows = 0
        columns = values.reshape(len(values), len(self.targets))
        for j, child in enumerate(self._histograms):
            observe_many(child, columns[:, j])
        self.drift.extend(columns)

    def transform(self, families: list[Any]) -> list[Any]:
        """内部のゲージ（全ワーカーの合計）を予測の PSI と窓の行数に置き換える。"""
        return self.drift.transform(families)
