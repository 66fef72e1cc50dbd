"""データプレーン：完全性の確認・サンプル・入力の検証・応答の形。"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from model_in_image.errors import InvalidInputError, ModelLoadError, ModelServerError
from model_in_image.inference import (
    SMALL_INPUT_VALUES,
    InferenceService,
    Limits,
    build_service,
    decode_predict_body,
    validate_rows,
)
from model_in_image.modelcard import ModelCard
from model_in_image.runtime import SMALL_BATCH_ROWS
from model_in_image.settings import Settings

from .conftest import ModelFiles

SETOSA = [5.1, 3.5, 1.4, 0.2]
LIMITS = Limits(max_rows=3)

SettingsFactory = Callable[..., Settings]


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
        service = build_service(make_settings(model_sha256=digest))
        assert service.metadata["model_sha256"] == digest

    def test_model_sha256_mismatch_names_both_hashes(
        self, make_settings: SettingsFactory, model_path: Path
    ) -> None:
        actual = hashlib.sha256(model_path.read_bytes()).hexdigest()
        expected = "0" * 64
        with pytest.raises(ModelLoadError, match="integrity") as info:
            build_service(make_settings(model_sha256=expected))
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
            build_service(settings)
        assert "f" * 64 in info.value.message

    def test_explicit_card_missing(self, make_settings: SettingsFactory, tmp_path: Path) -> None:
        missing = tmp_path / "card.json"
        with pytest.raises(ModelLoadError, match="model card not found"):
            build_service(make_settings(model_card_filepath=missing))

    def test_corrupt_card(self, make_settings: SettingsFactory, model_copy: Path) -> None:
        (model_copy / "model_card.json").write_text('{"name": "x"}', encoding="utf-8")
        settings = make_settings(
            model_filepath=model_copy / "iris_svc.onnx", label_filepath=model_copy / "label.json"
        )
        with pytest.raises(ModelLoadError, match="model card is not valid"):
            build_service(settings)

    def test_explicit_card_is_used(self, make_settings: SettingsFactory, card_path: Path) -> None:
        service = build_service(make_settings(model_card_filepath=card_path))
        assert service.card == ModelCard.read(card_path)
        assert service.metadata["heldout_accuracy"] == service.card.heldout_accuracy

    def test_card_is_optional_when_implicit(
        self, make_settings: SettingsFactory, model_copy: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (model_copy / "model_card.json").unlink()
        settings = make_settings(
            model_filepath=model_copy / "iris_svc.onnx", label_filepath=model_copy / "label.json"
        )
        with caplog.at_level(logging.WARNING, logger="model_in_image.inference"):
            service = build_service(settings)
        assert service.card is None
        assert service.metadata["heldout_accuracy"] is None
        assert service.metadata["data_sample"] == [[0.0, 0.0, 0.0, 0.0]]
        assert "no sample input" in caplog.text


class TestSample:
    """/metadata と /predict/test のサンプル。"""

    def test_sample_from_the_card(self, service: InferenceService) -> None:
        assert service.sample == [SETOSA]
        assert service.metadata["data_sample"] == [SETOSA]

    def test_sample_data_overrides_the_card(self, make_settings: SettingsFactory) -> None:
        rows = [[6.3, 2.9, 5.6, 1.8], SETOSA]
        service = build_service(make_settings(sample_data=rows))
        assert service.metadata["data_structure"] == "(2,4)"
        assert service.metadata["prediction_structure"] == "(2,3)"
        assert len(service.metadata["prediction_sample"]) == 2
        assert orjson.loads(service.sample_label_json) == {"prediction": ["virginica", "setosa"]}

    def test_sample_that_does_not_fit_the_model(self, make_settings: SettingsFactory) -> None:
        with pytest.raises(ModelLoadError, match="sample input does not fit the model"):
            build_service(make_settings(sample_data=[[1.0, 2.0, 3.0]]))

    def test_model_name_override(self, make_settings: SettingsFactory) -> None:
        assert (
            build_service(make_settings(model_name="iris-v2")).metadata["model_name"] == "iris-v2"
        )


class TestMetadata:
    """メタデータはモデルから導く。"""

    def test_seed_shape(self, service: InferenceService, model_path: Path) -> None:
        meta = service.metadata
        assert meta["data_type"] == "float32"
        assert meta["data_structure"] == "(1,4)"
        assert meta["prediction_type"] == "float32"
        assert meta["prediction_structure"] == "(1,3)"
        assert meta["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
        assert meta["labels"] == ["setosa", "versicolor", "virginica"]
        assert meta["output_kind"] == "tensor"
        assert orjson.loads(service.metadata_json) == meta
        sample = orjson.loads(service.sample_proba_json)["prediction"]
        assert meta["prediction_sample"] == sample

    def test_five_feature_model(
        self, make_settings: SettingsFactory, binary_model: ModelFiles
    ) -> None:
        settings = make_settings(
            model_filepath=binary_model.model,
            label_filepath=binary_model.labels,
            sample_data=[[1, 2, 3, 4, 5]],
        )
        service = build_service(settings)
        assert service.input_width == 5
        assert service.metadata["data_structure"] == "(1,5)"
        assert service.metadata["prediction_structure"] == "(1,2)"
        assert orjson.loads(service.labels_json) == {"0": "negative", "1": "positive"}
        assert service.metadata["model_name"] == "binary_lr"

    def test_double_model_types(
        self, make_settings: SettingsFactory, double_model: ModelFiles
    ) -> None:
        settings = make_settings(
            model_filepath=double_model.model, label_filepath=double_model.labels
        )
        service = build_service(settings)
        assert service.metadata["data_type"] == "float64"
        assert service.metadata["prediction_type"] == "float64"


class TestDecode:
    """JSON ボディの解析（型の誤りは 422、JSON でなければ 400）。"""

    def test_valid(self) -> None:
        assert decode_predict_body(b'{"data": [[1, 2.5]]}') == [[1.0, 2.5]]

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            (b"{}", ["body", "data"]),
            (b'{"data": [1]}', ["body", "data", 0]),
            (b'{"data": [[1, "x"]]}', ["body", "data", 0, 1]),
            (b'{"data": [[1], [2, true]]}', ["body", "data", 1, 1]),
            (b"[1, 2]", ["body"]),
        ],
    )
    def test_type_errors_have_fastapi_locations(self, body: bytes, loc: list[str | int]) -> None:
        with pytest.raises(InvalidInputError) as info:
            decode_predict_body(body)
        assert info.value.status_code == 422
        assert info.value.errors[0]["loc"] == loc
        assert info.value.errors[0]["msg"]

    @pytest.mark.parametrize("body", [b"", b"{", b"{'data': 1}", b'{"data": [[NaN]]}'])
    def test_malformed_json_is_400(self, body: bytes) -> None:
        with pytest.raises(ModelServerError, match="Invalid JSON") as info:
            decode_predict_body(body)
        assert info.value.status_code == 400


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

    def test_float32_max_is_allowed(self) -> None:
        biggest = float(np.finfo(np.float32).max)
        validate_rows([[biggest, -biggest]], width=2, limits=LIMITS, loc=("data",))


class TestResponses:
    """応答の直列化（1 行なら平ら、N 行ならリスト）。"""

    def test_single_row_is_flat(self, service: InferenceService) -> None:
        payload = orjson.loads(service.predict_proba_json(b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'))
        assert len(payload["prediction"]) == 3
        assert sum(payload["prediction"]) == pytest.approx(1.0, abs=1e-5)

    def test_rows_in_order(self, service: InferenceService) -> None:
        body = b'{"data": [[6.3, 2.9, 5.6, 1.8], [5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5]]}'
        labels = orjson.loads(service.predict_label_json(body))
        assert labels == {"prediction": ["virginica", "setosa", "versicolor"]}
        proba = orjson.loads(service.predict_proba_json(body))["prediction"]
        assert [int(np.argmax(row)) for row in proba] == [2, 0, 1]


class TestSmallAndLargeBatchesAgree:
    """小さな入力は Python、大きな入力は numpy で処理する：どちらも同じ結果になる。"""

    def test_encode_and_labels_cross_the_threshold(self, service: InferenceService) -> None:
        species = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]]
        features = np.array(species * 10, dtype=np.float32)
        proba = service.predict(features)
        for n in (1, 2, SMALL_BATCH_ROWS, SMALL_BATCH_ROWS + 1, len(proba)):
            part = proba[:n]
            numpy_bytes = orjson.dumps(
                part.astype(np.float64)[0] if n == 1 else part.astype(np.float64),
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            assert service.encode_proba(part) == b'{"prediction":' + numpy_bytes + b"}"
            expected = [service.classifier.labels[i] for i in part.argmax(axis=1)]
            assert service.classifier.labels_of(part) == expected

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
