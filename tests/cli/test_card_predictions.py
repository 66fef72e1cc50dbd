"""model-in-image card：回帰モデルのカードの予測の参照分布と、合わないカードの --check の拒否。"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_in_image.cli import main
from model_in_image.modelcard import ModelCard
from support.regressors import linear_regression

Capture = pytest.CaptureFixture[str]


def test_a_regressor_card_and_its_check(tmp_path: Path, capsys: Capture) -> None:
    regressor = linear_regression(tmp_path, rows=300)
    card_path = tmp_path / "model_card.json"
    args = ["card", "--model", str(regressor.model)]
    assert main([*args, "--reference", str(regressor.reference)]) == 0
    assert "regressor" in capsys.readouterr().err
    written = json.loads(card_path.read_text(encoding="utf-8"))
    assert written["classes"] is None
    assert written["prediction_reference"]["rows"] == 300
    assert [t["name"] for t in written["prediction_reference"]["targets"]] == ["prediction"]
    assert main([*args, "--check", str(card_path)]) == 0
    assert "MODEL_FILE=price.onnx" in capsys.readouterr().out


def test_check_refuses_a_prediction_reference_on_a_classifier(
    model_path: Path, label_path: Path, card_path: Path, tmp_path: Path, capsys: Capture
) -> None:
    regressor = linear_regression(tmp_path / "regressor", rows=300)
    assert (
        main(["card", "--model", str(regressor.model), "--reference", str(regressor.reference)])
        == 0
    )
    borrowed = ModelCard.read(regressor.model.with_name("model_card.json"))
    card = ModelCard.read(card_path).model_copy(
        update={"prediction_reference": borrowed.prediction_reference}
    )
    wrong = tmp_path / "card.json"
    card.write(wrong)
    capsys.readouterr()
    args = ["card", "--model", str(model_path), "--labels", str(label_path), "--check", str(wrong)]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "model refused: model card has a prediction_reference but the model is a classifier: "
        "the prediction reference is for regressors only (remove it from the card)"
    ]
