"""モデルの種類ごとに、どの予測の監視を付けるかを決める（起動時に 1 回）。

- クラスの数と確信度：確率を出し、クラス名の分かるモデル（分類器・確率のネット）
- 入力のドリフトと範囲外の値：実数 1 入力 [N, 幅] のモデルで、カードに reference があるとき
- 予測のドリフトと予測値のヒストグラム：回帰モデルで、カードに prediction_reference があるとき
監視できないもの（複数・文字列・整数の入力の入力ドリフト、モデルに合わない予測の参照分布）は
起動時に警告を 1 行ずつ出して、その監視だけを外す（提供は続ける）。
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from model_in_image.dataplane import DataPlane
from model_in_image.modelcard import prediction_reference_problem
from model_in_image.observability.monitoring import PredictionMonitor
from model_in_image.observability.prediction_drift import RegressionMonitor

logger = logging.getLogger(__name__)


class Monitor(Protocol):
    """データプレーンのリスナーで、Metrics の拡張でもある監視。"""

    def observe(self, features: Any, values: Any) -> None:
        """推論 1 回の入力と値を積む。"""

    def flush(self) -> None:
        """積んだ観測値を反映する。"""

    def transform(self, families: list[Any]) -> list[Any]:
        """出力する直前のメトリクスを書き換える。"""


def prediction_monitors(
    dataplane: DataPlane, registry: CollectorRegistry, *, window_rows: int
) -> list[Monitor]:
    """このモデルに付ける監視（無ければ空）。"""
    model, card = dataplane.model, dataplane.card
    named = model.gives_probabilities and dataplane.classes is not None
    classes = dataplane.labels if named else None
    reference = card.reference if card is not None else None
    if dataplane.input_width is None:
        inputs = ", ".join(spec.text() for spec in model.signature.inputs)
        logger.warning(
            "input drift monitoring needs one float input [N, width]; this model has %s: "
            "input drift is off (the other metrics and serving are not affected)",
            inputs,
        )
        reference = None
    monitors: list[Monitor] = []
    if classes is not None or reference is not None:
        monitors.append(PredictionMonitor(registry, classes, reference, window_rows=window_rows))
    predictions = card.prediction_reference if card is not None else None
    if predictions is not None:
        kind, values = model.kind.value, dataplane.sample_values
        problem = prediction_reference_problem(predictions, kind, values)
        if problem is None:
            monitors.append(RegressionMonitor(registry, predictions, window_rows=window_rows))
        else:
            logger.warning("%s: prediction drift is off", problem)
    return monitors
