"""codecs.seed：シード API のボディの解析と応答の形（メタデータ・1 行は平ら・N 行はリスト）。"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from model_in_image.codecs import seed
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelServerError
from model_in_image.loading import load_dataplane
from model_in_image.runtime import SMALL_BATCH_ROWS
from support.apps import SettingsFactory
from support.models import ModelFiles
from support.samples import SETOSA, VERSICOLOR, VIRGINICA

LOC = ("body", "data")


def meta(dataplane: DataPlane) -> dict[str, Any]:
    """/metadata の内容。"""
    result: dict[str, Any] = orjson.loads(seed.encode_metadata(dataplane))
    return result


def predict(dataplane: DataPlane, body: bytes) -> np.ndarray[Any, Any]:
    """シードのボディを解析・検証・推論する（POST /predict と同じ順）。"""
    return dataplane.predict(dataplane.validate(seed.decode_rows(body), loc=LOC))


class TestMetadata:
    """メタデータはモデルから導く。"""

    def test_seed_shape(self, dataplane: DataPlane, model_path: Path) -> None:
        metadata = meta(dataplane)
        assert metadata["data_type"] == "float32"
        assert metadata["data_structure"] == "(1,4)"
        assert metadata["prediction_type"] == "float32"
        assert metadata["prediction_structure"] == "(1,3)"
        assert metadata["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
        assert metadata["labels"] == ["setosa", "versicolor", "virginica"]
        assert metadata["output_kind"] == "tensor"
        sample = orjson.loads(seed.encode_probabilities(dataplane.sample_probabilities))
        assert metadata["prediction_sample"] == sample["prediction"]

    def test_five_feature_model(
        self, make_settings: SettingsFactory, binary_model: ModelFiles
    ) -> None:
        settings = make_settings(
            model_filepath=binary_model.model,
            label_filepath=binary_model.labels,
            sample_data=[[1, 2, 3, 4, 5]],
        )
        dataplane = load_dataplane(settings)
        assert dataplane.input_width == 5
        assert meta(dataplane)["data_structure"] == "(1,5)"
        assert meta(dataplane)["prediction_structure"] == "(1,2)"
        label_map = orjson.loads(seed.encode_label_map(dataplane.labels))
        assert label_map == {"0": "negative", "1": "positive"}
        assert meta(dataplane)["model_name"] == "binary_lr"

    def test_double_model_types(
        self, make_settings: SettingsFactory, double_model: ModelFiles
    ) -> None:
        settings = make_settings(
            model_filepath=double_model.model, label_filepath=double_model.labels
        )
        dataplane = load_dataplane(settings)
        assert meta(dataplane)["data_type"] == "float64"
        assert meta(dataplane)["prediction_type"] == "float64"


class TestDecode:
    """JSON ボディの解析（型の誤りは 422、JSON でなければ 400）。"""

    def test_valid(self) -> None:
        assert seed.decode_rows(b'{"data": [[1, 2.5]]}') == [[1.0, 2.5]]

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
            seed.decode_rows(body)
        assert info.value.status_code == 422
        assert info.value.errors[0]["loc"] == loc
        assert info.value.errors[0]["msg"]

    @pytest.mark.parametrize(
        "body",
        [b"", b"{", b"{'data': 1}", b'{"data": [[NaN]]}', b"\xff{}", b'{"x": ' + b"[" * 5000],
    )
    def test_malformed_json_is_400(self, body: bytes) -> None:
        with pytest.raises(ModelServerError, match="Invalid JSON") as info:
            seed.decode_rows(body)
        assert info.value.status_code == 400


class TestResponses:
    """応答の直列化（1 行なら平ら、N 行ならリスト）。"""

    def test_single_row_is_flat(self, dataplane: DataPlane) -> None:
        body = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
        payload = orjson.loads(seed.encode_probabilities(predict(dataplane, body)))
        assert len(payload["prediction"]) == 3
        assert sum(payload["prediction"]) == pytest.approx(1.0, abs=1e-5)

    def test_rows_in_order(self, dataplane: DataPlane) -> None:
        body = orjson.dumps({"data": [VIRGINICA, SETOSA, VERSICOLOR]})
        proba = predict(dataplane, body)
        labels = orjson.loads(seed.encode_labels(dataplane.labels_of(proba)))
        assert labels == {"prediction": ["virginica", "setosa", "versicolor"]}
        rows = orjson.loads(seed.encode_probabilities(proba))["prediction"]
        assert [int(np.argmax(row)) for row in rows] == [2, 0, 1]

    def test_encode_and_labels_cross_the_threshold(self, dataplane: DataPlane) -> None:
        """小さな応答は Python、大きな応答は numpy で直列化する：どちらも同じ結果になる。"""
        features = np.array([SETOSA, VERSICOLOR, VIRGINICA] * 10, dtype=np.float32)
        proba = dataplane.predict(dataplane.validate(features, loc=("data",)))
        for n in (1, 2, SMALL_BATCH_ROWS, SMALL_BATCH_ROWS + 1, len(proba)):
            part = proba[:n]
            numpy_bytes = orjson.dumps(
                part.astype(np.float64)[0] if n == 1 else part.astype(np.float64),
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            assert seed.encode_probabilities(part) == b'{"prediction":' + numpy_bytes + b"}"
            expected = [dataplane.labels[i] for i in part.argmax(axis=1)]
            assert dataplane.labels_of(part) == expected
