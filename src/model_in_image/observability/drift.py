"""窓の PSI：参照分布（列ごとの分位点のビン）に対する直近の行の分布の変化。

入力の特徴量（model_feature_drift_*）と回帰の予測（model_prediction_drift_*）が同じ仕組みを使う。
ワーカーが複数でも正しいよう、各ワーカーは自分の窓のビンごとの行数を内部のゲージ
（multiprocess_mode=livesum：生きているワーカーの合計）に書き、/metrics を返すワーカーが
その合計から PSI を計算する。内部のゲージは出力から除く。
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily

from model_in_image.modelcard import FeatureReference, bin_counts
from model_in_image.runtime import FloatArray

# 空のビンの割合の下限（0 の対数を避ける。よく使われる 0.0001）
PSI_FLOOR = 1e-4


def population_stability_index(
    counts: Sequence[float] | FloatArray, expected: Sequence[float]
) -> float:
    """PSI = Σ (実際の割合 − 参照の割合) × ln(実際 / 参照)。割合は PSI_FLOOR 以上に切り上げる。"""
    observed = np.asarray(counts, dtype=np.float64)
    actual = np.maximum(observed / observed.sum(), PSI_FLOOR)
    reference = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((actual - reference) * np.log(actual / reference)))


class SlidingWindow:
    """直近 capacity 行を持つリングバッファ（行の順は問わない：ビンの行数にしか使わない）。"""

    def __init__(self, capacity: int, width: int) -> None:
        self.data = np.zeros((capacity, width), dtype=np.float64)
        self.size = 0
        self._next = 0

    def extend(self, rows: FloatArray) -> None:
        """行を足し、あふれた古い行を捨てる。"""
        capacity = len(self.data)
        count = len(rows)
        if count >= capacity:
            self.data[:] = rows[count - capacity :]
            self.size, self._next = capacity, 0
            return
        end = self._next + count
        if end <= capacity:
            self.data[self._next : end] = rows
        else:
            split = capacity - self._next
            self.data[self._next :] = rows[:split]
            self.data[: end - capacity] = rows[split:]
        self._next = end % capacity
        self.size = min(capacity, self.size + count)

    def rows(self) -> FloatArray:
        """窓の中の行。"""
        return self.data[: self.size]


@dataclass(frozen=True, slots=True)
class DriftMetrics:
    """窓の PSI のメトリクスの名前（label は列のラベル名：feature か target）。"""

    label: str
    psi: str
    rows: str
    bins: str  # 内部：窓のビンごとの行数（出力しない）
    subject: str  # ヘルプの文の主語（「入力の特徴量」など）


class WindowDrift:
    """列ごとの参照分布に対する直近 window_rows 行の PSI（全ワーカーの合計から）。"""

    def __init__(
        self,
        registry: CollectorRegistry,
        references: Sequence[FeatureReference],
        metrics: DriftMetrics,
        *,
        window_rows: int,
    ) -> None:
        self.references = list(references)
        self.metrics = metrics
        self.window_rows = window_rows
        self.columns = [ref.name or str(i) for i, ref in enumerate(self.references)]
        self._index = {name: i for i, name in enumerate(self.columns)}
        self.window = SlidingWindow(window_rows, len(self.references))
        bins = Gauge(
            metrics.bins,
            "ドリフトの窓のビンごとの行数（内部用、/metrics には出さない）",
            [metrics.label, "bin"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._bins = [
            [bins.labels(name, str(b)) for b in range(len(ref.proportions))]
            for name, ref in zip(self.columns, self.references, strict=True)
        ]

    def extend(self, values: FloatArray) -> None:
        """[N, 列] の値を窓に足し、窓のビンごとの行数をゲージに書く。"""
        self.window.extend(values)
        window = self.window.rows()
        for j, ref in enumerate(self.references):
            counts = bin_counts(ref.edges, window[:, j]).tolist()
            for gauge, count in zip(self._bins[j], counts, strict=True):
                gauge.set(count)

    def transform(self, families: list[Any]) -> list[Any]:
        """内部のゲージ（全ワーカーの合計）を PSI と窓の行数に置き換える。"""
        metrics = self.metrics
        kept = [family for family in families if family.name != metrics.bins]
        counts = [np.zeros(len(ref.proportions)) for ref in self.references]
        for family in families:
            if family.name != metrics.bins:
                continue
            for sample in family.samples:
                column = self._index.get(sample.labels.get(metrics.label, ""))
                if column is not None and sample.name == metrics.bins:
                    counts[column][int(sample.labels["bin"])] += sample.value
        rows = int(counts[0].sum())
        kept.append(GaugeMetricFamily(metrics.rows, "ドリフトの窓の行数（全ワーカーの合計）", rows))
        if rows < self.window_rows:  # 窓が埋まるまでは PSI を出さない（少ない行の PSI は揺れる）
            return kept
        psi = GaugeMetricFamily(
            metrics.psi,
            f"{metrics.subject}ごとの PSI（直近の窓 対 モデルカードの参照分布）",
            labels=[metrics.label],
        )
        for name, ref, observed in zip(self.columns, self.references, counts, strict=True):
            psi.add_metric([name], population_stability_index(observed, ref.proportions))
        kept.append(psi)
        return kept
