"""回帰モデルのカード：予測の参照分布・--check の拒否・分類器のカードは前と同じ。"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_in_image.card import check_model, create_card, write_card
from model_in_image.errors import ModelLoadError
from model_in_image.modelcard import (
    FeatureReference,
    ModelCard,
    PredictionReference,
    bin_counts,
    prediction_reference,
    prediction_targets,
)
from support.paths import CARD_FILE
from support.regressors import Regressor, linear_regression

ROWS = 600


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> Regressor:
    """1 つの値を予測する回帰（出力 variable [N, 1]）。"""
    return linear_regression(tmp_path_factory.mktemp("one"), rows=ROWS)


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory: pytest.TempPathFactory) -> Regressor:
    """2 つの値を予測する回帰（出力 [N, 2]）。"""
    return linear_regression(tmp_path_factory.mktemp("two"), rows=ROWS, targets=2)


def _written(card: ModelCard, path: Path) -> Path:
    write_card(card, path, force=True)
    return path


class TestCreate:
    def test_the_card_holds_the_distribution_of_the_predictions(self, regressor: Regressor) -> None:
        card = create_card(regressor.model, None, reference=regressor.reference)
        assert card.kind == "regressor"
        assert card.classes is None
        assert card.reference is not None  # 入力の参照分布もある（入力のドリフト用）
        reference = card.prediction_reference
        assert reference is not None
        assert reference.rows == ROWS
        (target,) = reference.targets
        assert target.name == "prediction"
        assert len(target.edges) == 9  # 10 個の分位点のビン
        assert target.proportions == pytest.approx([0.1] * 10, abs=1.5 / ROWS)
        # scikit-learn 自身の予測で数えても同じビンの割合（境界の上の 1 行の違いまで）
        expected = regressor.predict(regressor.features)
        assert (target.min, target.max) == pytest.approx((expected.min(), expected.max()), 1e-5)
        counts = bin_counts(target.edges, expected) / ROWS
        assert counts == pytest.approx(target.proportions, abs=1.01 / ROWS)

    def test_several_outputs_are_one_target_each(self, two_targets: Regressor) -> None:
        card = create_card(two_targets.model, None, reference=two_targets.reference)
        reference = card.prediction_reference
        assert reference is not None
        assert [t.name for t in reference.targets] == ["prediction_0", "prediction_1"]
        expected = two_targets.predict(two_targets.features)
        for j, target in enumerate(reference.targets):
            assert target.max == pytest.approx(expected[:, j].max(), rel=1e-5)

    def test_without_reference_data_there_is_no_prediction_reference(
        self, regressor: Regressor, tmp_path: Path
    ) -> None:
        card = create_card(regressor.model, None)
        assert card.prediction_reference is None
        text = _written(card, tmp_path / "card.json").read_text(encoding="utf-8")
        assert "prediction_reference" not in text

    def test_the_written_card_reads_back(self, regressor: Regressor, tmp_path: Path) -> None:
        card = create_card(regressor.model, None, reference=regressor.reference)
        path = _written(card, tmp_path / "card.json")
        assert "prediction_reference" in json.loads(path.read_text(encoding="utf-8"))
        assert ModelCard.read(path).prediction_reference == card.prediction_reference


class TestClassifierCards:
    """分類器のカードは prediction_reference を持たず、書き出しは前と同じバイト列。"""

    def test_committed_card_is_written_byte_for_byte(self, tmp_path: Path) -> None:
        card = ModelCard.read(CARD_FILE)
        assert card.prediction_reference is None
        assert _written(card, tmp_path / "card.json").read_bytes() == CARD_FILE.read_bytes()

    def test_a_classifier_card_with_reference_data_has_no_prediction_reference(
        self, model_path: Path, label_path: Path, tmp_path: Path
    ) -> None:
        reference = tmp_path / "ref.csv"
        reference.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.3,2.9,5.6,1.8\n", encoding="utf-8")
        card = create_card(model_path, label_path, reference=reference)
        assert card.reference is not None
        assert card.prediction_reference is None
        assert "prediction_reference" not in card.to_json()


class TestCheck:
    def test_a_regressor_card_passes(self, regressor: Regressor, tmp_path: Path) -> None:
        card = create_card(regressor.model, None, reference=regressor.reference)
        facts = check_model(regressor.model, None, _written(card, tmp_path / "card.json"))
        assert facts.kind == "regressor"

    def test_prediction_reference_on_a_classifier_is_refused(
        self, regressor: Regressor, model_path: Path, label_path: Path, tmp_path: Path
    ) -> None:
        borrowed = create_card(regressor.model, None, reference=regressor.reference)
        card = ModelCard.read(CARD_FILE).model_copy(
            update={"prediction_reference": borrowed.prediction_reference}
        )
        path = _written(card, tmp_path / "card.json")
        with pytest.raises(
            ModelLoadError,
            match="model card has a prediction_reference but the model is a classifier: "
            "the prediction reference is for regressors only",
        ):
            check_model(model_path, label_path, path)

    @pytest.mark.parametrize(
        ("names", "message"),
        [
            (["prediction_0", "prediction_1"], r"\['prediction_0', 'prediction_1'\] but .* give "),
            (["price"], r"targets \['price'\] but the model's predictions give \['prediction'\]"),
        ],
    )
    def test_targets_must_match_the_outputs(
        self, regressor: Regressor, tmp_path: Path, names: list[str], message: str
    ) -> None:
        card = create_card(regressor.model, None, reference=regressor.reference)
        assert card.prediction_reference is not None
        (target,) = card.prediction_reference.targets
        targets = [target.model_copy(update={"name": name}) for name in names]
        wrong = card.model_copy(
            update={"prediction_reference": PredictionReference(rows=ROWS, targets=targets)}
        )
        with pytest.raises(ModelLoadError, match=message):
            check_model(regressor.model, None, _written(wrong, tmp_path / "card.json"))

    def test_fewer_targets_than_outputs_is_refused(
        self, regressor: Regressor, two_targets: Regressor, tmp_path: Path
    ) -> None:
        one = create_card(regressor.model, None, reference=regressor.reference)
        card = create_card(two_targets.model, None, reference=two_targets.reference)
        wrong = card.model_copy(update={"prediction_reference": one.prediction_reference})
        with pytest.raises(ModelLoadError, match=r"\['prediction'\] but .* \['prediction_0'"):
            check_model(two_targets.model, None, _written(wrong, tmp_path / "card.json"))


def test_target_names_follow_the_prediction_shape() -> None:
    assert prediction_targets(np.zeros(5)) == ["prediction"]
    assert prediction_targets(np.zeros((5, 1))) == ["prediction"]
    assert prediction_targets(np.zeros((5, 3))) == ["prediction_0", "prediction_1", "prediction_2"]


def test_constant_predictions_give_one_bin() -> None:
    reference = prediction_reference(np.full(20, 4.5))
    assert reference.targets == [
        FeatureReference(name="prediction", min=4.5, max=4.5, edges=[], proportions=[1.0])
    ]
