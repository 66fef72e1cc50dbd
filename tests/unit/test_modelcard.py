"""モデルカードの参照分布（ドリフト監視の基準）：ビンの規則・割合・検証。"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from model_in_image.modelcard import (
    FeatureReference,
    ModelCard,
    bin_counts,
    reference_statistics,
)
from model_in_image.training import TrainResult


def test_bin_counts_put_edge_values_in_the_lower_bin() -> None:
    counts = bin_counts([1.0, 2.0], np.array([-5.0, 1.0, 1.5, 2.0, 2.5, 99.0]))
    assert counts.tolist() == [2, 2, 2]


def test_reference_statistics_of_a_uniform_column() -> None:
    data = np.arange(1000, dtype=np.float64).reshape(-1, 1)
    (feature,) = reference_statistics(data, ["x"], bins=10).features
    assert (feature.min, feature.max) == (0.0, 999.0)
    assert len(feature.edges) == 9
    assert feature.proportions == pytest.approx([0.1] * 10)


def test_ties_merge_bins_and_the_proportions_still_describe_the_data() -> None:
    data = np.array([[0.0]] * 95 + [[1.0]] * 5)
    (feature,) = reference_statistics(data, ["flag"], bins=10).features
    assert feature.edges == [0.0]
    assert feature.proportions == [0.95, 0.05]
    assert bin_counts(feature.edges, data[:, 0]).tolist() == [95, 5]


def test_reference_data_is_checked() -> None:
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        reference_statistics(np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="finite"):
        reference_statistics(np.array([[np.nan]]), ["a"])


@pytest.mark.parametrize(
    ("edges", "proportions", "message"),
    [
        ([1.0], [1.0], "one more entry"),
        ([2.0, 1.0], [0.2, 0.3, 0.5], "increasing"),
        ([1.0], [0.5, 0.6], "sum to 1"),
        ([1.0], [-0.5, 1.5], "non-negative"),
    ],
)
def test_feature_reference_rejects_inconsistent_bins(
    edges: list[float], proportions: list[float], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureReference(name="x", min=0, max=3, edges=edges, proportions=proportions)


def test_trained_card_carries_the_training_split_reference(trained: TrainResult) -> None:
    card = ModelCard.read(trained.card_path)
    assert card.reference is not None
    assert card.reference.rows == 120  # 150 行の 80 %（学習用の分割）
    assert [f.name for f in card.reference.features] == card.feature_names
    for feature in card.reference.features:
        assert sum(feature.proportions) == pytest.approx(1.0)
        assert feature.min < feature.max


def test_card_widths_must_agree(trained: TrainResult) -> None:
    card = ModelCard.read(trained.card_path)
    with pytest.raises(ValidationError, match="feature_names"):
        ModelCard.model_validate({**card.model_dump(), "feature_names": ["only one"]})
