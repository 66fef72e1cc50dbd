"""データプレーン：完全性の確認・サンプル・入力の検証（応答の形は test_codec_seed）。"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from model_in_image.codecs import seed
from model_in_image.dataplane import DataPlane, Limits
from model_in_image.errors import InvalidInputError, ModelLoadError
from model_in_image.loading import load_dataplane
from model_in_image.model.inputs import SMALL_INPUT_VALUES, check_count, float_matrix
from model_in_image.modelcard import ModelCard
from support.apps import SettingsFactory
from support.models import ModelFiles
from support.samples import SETOSA

LIMITS = Limits(max_rows=3)


def validate_rows(
    rows: Any, *, width: int, limits: Limits, loc: tuple[str, ...], dtype: Any = np.float64
) -> Any:
    """[N, 幅] の実数 1 入力のモデルの検証（DataPlane.validate の速い経路と同じ関数）。"""
    check_count(rows, limits.max_rows, loc)
    return float_matrix(rows, width, np.dtype(dtype), loc)


def meta(dataplane: DataPlane) -> dict[str, Any]:
    """/metadata の内容。"""
    result: dict[str, Any] = orjson.loads(seed.encode_metadata(dataplane))
    return result


@pytest.fixture
def model_copy(tmp_path: Path, models_dir: Path) -> Path:
    """同梱の models/ を tmp に複製したもの（モデルカードを書き換える試験用）。"""
    target = tmp_path / "models"
    shutil.copytree(models_dir, target)
    return target


class TestIntegrity:
    """モデルの sha256（MODEL_SHA256 とモデルカード）を起動時に確かめる。"""

    def test_matching_model_sha256(self, make_settings: SettingsFactory, model_path: Path) -> None:
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        dataplane = load_dataplane(make_settings(model_sha256=digest))
        assert meta(dataplane)["model_sha256"] == digest

    def test_model_sha256_mismatch_names_both_hashes(
        self, make_settings: SettingsFactory, model_path: Path
    ) -> None:
        actual = hashlib.sha256(model_path.read_bytes()).hexdigest()
        expected = "0" * 64
        with pytest.raises(ModelLoadError, match="integrity") as info:
            load_dataplane(make_settings(model_sha256=expected))
        assert actual in info.value.message
        assert expected in info.value.message

    def test_card_sha256_mismatch(self, make_settings: SettingsFactory, model_copy: Path) -> None:
        card_path = model_copy / "model_card.json"
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["sha256"] = "f" * 64
        card_path.write_text(json.dumps(card), encoding="utf-8")
        settings = make_settings(
            model_filepath=model_copy / "iris_svc.onnx", label_filepath=model_copy / "label.json"
        )
        with pytest.raises(ModelLoadError, match="model card") as info:
            load_dataplane(settings)
        assert "f" * 64 in info.value.message

    def test_explicit_card_missing(self, make_settings: SettingsFactory, tmp_path: Path) -> None:
        missing = tmp_path / "card.json"
        with pytest.raises(ModelLoadError, match="model card not found"):
            load_dataplane(make_settings(model_card_filepath=missing))

    def test_corrupt_card(self, make_settings: SettingsFactory, model_copy: Path) -> None:
        (model_copy / "model_card.json").write_text('{"name": "x"}', encoding="utf-8")
        settings = make_settings(
            model_filepath=model_copy / "iris_svc.onnx", label_filepath=model_copy / "label.json"
        )
        with pytest.raises(ModelLoadError, match="model card is not valid"):
            load_dataplane(settings)

    def test_explicit_card_is_used(self, make_settings: SettingsFactory, card_path: Path) -> None:
        dataplane = load_dataplane(make_settings(model_card_filepath=card_path))
        assert dataplane.card == ModelCard.read(card_path)
        assert meta(dataplane)["heldout_accuracy"] == dataplane.card.heldout_accuracy

    def test_card_is_optional_when_implicit(
        self, make_settings: SettingsFactory, model_copy: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (model_copy / "model_card.json").unlink()
        settings = make_settings(
            model_filepath=model_copy / "iris_svc.onnx", label_filepath=model_copy / "label.json"
        )
        with caplog.at_level(logging.WARNING, logger="model_in_image.loading"):
            dataplane = load_dataplane(settings)
        assert dataplane.card is None
        assert meta(dataplane)["heldout_accuracy"] is None
        assert meta(dataplane)["data_sample"] == [[0.0, 0.0, 0.0, 0.0]]
        assert "no sample input" in caplog.text


class TestSample:
    """/metadata と /predict/test のサンプル。"""

    def test_sample_from_the_card(self, dataplane: DataPlane) -> None:
        assert dataplane.sample == [SETOSA]
        assert meta(dataplane)["data_sample"] == [SETOSA]

    def test_sample_data_overrides_the_card(self, make_settings: SettingsFactory) -> None:
        rows = [[6.3, 2.9, 5.6, 1.8], SETOSA]
        dataplane = load_dataplane(make_settings(sample_data=rows))
        assert meta(dataplane)["data_structure"] == "(2,4)"
        assert meta(dataplane)["prediction_structure"] == "(2,3)"
        assert len(meta(dataplane)["prediction_sample"]) == 2
        assert dataplane.labels_of(dataplane.sample_probabilities) == ["virginica", "setosa"]

    @pytest.mark.parametrize(
        "sample",
        [[[1.0, 2.0, 3.0]], [["a", 1, 2, 3]], [1, 2], [{"X": [1, 2, 3, 4]}]],
        ids=["narrow", "string", "scalars", "object"],
    )
    def test_sample_that_does_not_fit_the_model(
        self, make_settings: SettingsFactory, sample: list[Any]
    ) -> None:
        """行の型と形はモデルを読み込んでから確かめる（文字列やスカラーの行が合うモデルもある）。"""
        with pytest.raises(ModelLoadError, match="sample input does not fit the model"):
            load_dataplane(make_settings(sample_data=sample))

    def test_model_name_override(self, make_settings: SettingsFactory) -> None:
        assert load_dataplane(make_settings(model_name="iris-v2")).model_name == "iris-v2"


class TestValidateRows:
    """行列の検証（空・上限・幅・範囲）。"""

    def test_valid(self) -> None:
        array = validate_rows([[1, 2], [3, 4]], width=2, limits=LIMITS, loc=("data",))
        assert array.dtype == np.float64
        assert array.shape == (2, 2)

    @pytest.mark.parametrize(
        ("rows", "loc", "kind"),
        [
            ([], ["data"], "too_short"),
            ([[1, 2]] * 4, ["data"], "too_long"),
            ([[1, 2], [1]], ["data", 1], "value_error"),
            ([[1, 2], [1, 2, 3]], ["data", 1], "value_error"),
            ([[1, 2], [1, float("nan")]], ["data", 1, 1], "value_error"),
            ([[float("inf"), 2]], ["data", 0, 0], "value_error"),
            ([[1, -1e39]], ["data", 0, 1], "value_error"),
        ],
    )
    def test_rejected(self, rows: list[list[float]], loc: list[str | int], kind: str) -> None:
        with pytest.raises(InvalidInputError) as info:
            validate_rows(rows, width=2, limits=LIMITS, loc=("data",))
        (error,) = info.value.errors
        assert (error["loc"], error["type"]) == (loc, kind)

    @pytest.mark.parametrize("count", [1, 3])
    def test_numpy_array(self, count: int) -> None:
        """numpy の配列もそのまま受け付ける（バッチ推論がチャンクを配列で渡す）。"""
        rows = np.arange(count * 2, dtype=np.float64).reshape(count, 2)
        array = validate_rows(rows, width=2, limits=LIMITS, loc=("data",))
        np.testing.assert_array_equal(array, rows)

    def test_empty_numpy_array(self) -> None:
        with pytest.raises(InvalidInputError, match="at least one row"):
            validate_rows(np.empty((0, 2)), width=2, limits=LIMITS, loc=("data",))

    def test_float32_max_is_allowed(self) -> None:
        biggest = float(np.finfo(np.float32).max)
        validate_rows([[biggest, -biggest]], width=2, limits=LIMITS, loc=("data",))


class TestSmallAndLargeBatchesAgree:
    """小さな入力は Python、大きな入力は numpy で処理する：どちらも同じ結果になる。"""

    def test_validate_rows_crosses_the_threshold(self) -> None:
        row = [1.5, -2.0]
        for n in (1, SMALL_INPUT_VALUES // 2, SMALL_INPUT_VALUES // 2 + 1):
            limits = Limits(max_rows=n)
            array = validate_rows([row] * n, width=2, limits=limits, loc=("data",))
            np.testing.assert_array_equal(array, np.array([row] * n))
            bad = [row] * (n - 1) + [[1.5, float("nan")]]
            with pytest.raises(InvalidInputError) as info:
                validate_rows(bad, width=2, limits=limits, loc=("data",))
            assert info.value.errors[0]["loc"] == ["data", n - 1, 1]

    def test_dtype_is_the_models(self) -> None:
        array = validate_rows([[1, 2]], width=2, limits=LIMITS, loc=("data",), dtype=np.float32)
        assert array.dtype == np.float32


def test_invalid_input_error_without_errors() -> None:
    assert InvalidInputError([]).message == "invalid input"


def test_five_feature_model_through_the_api(
    make_settings: SettingsFactory, binary_model: ModelFiles
) -> None:
    from fastapi.testclient import TestClient

    from model_in_image.api.app import create_app

    settings = make_settings(model_filepath=binary_model.model, label_filepath=binary_model.labels)
    with TestClient(create_app(settings)) as client:
        rows = {"data": [[3, 0, 0, 0, 3], [-3, 0, 0, 0, -3]]}
        assert client.post("/predict/label", json=rows).json() == {
            "prediction": ["positive", "negative"]
        }
        proba = client.post("/predict", json={"data": [[3, 0, 0, 0, 3]]}).json()["prediction"]
        assert len(proba) == 2
        narrow = client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
        assert narrow.status_code == 422
        assert "expects 5" in narrow.json()["detail"][0]["msg"]
        assert client.get("/label").json() == {"0": "negative", "1": "positive"}
        assert client.get("/metadata").json()["data_structure"] == "(1,5)"
