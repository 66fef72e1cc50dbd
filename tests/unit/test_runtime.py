"""OnnxClassifier：テンソル出力と ZipMap 出力、モデルから導く情報、読み込み失敗の即時検出。"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from model_in_image.errors import ModelLoadError
from model_in_image.runtime import (
    MAX_LABEL_FILE_BYTES,
    SMALL_BATCH_ROWS,
    NonFiniteOutputError,
    OnnxClassifier,
    OutputKind,
    load_labels,
    session_options,
)
from support.models import ModelFiles, export_regressor, write_labels
from support.samples import IRIS_LABELS

SPECIES_ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]], dtype=np.float32
)
SPECIES = ["setosa", "versicolor", "virginica"]


def _onnx_model(
    path: Path,
    inputs: Sequence[tuple[str, int, list[Any]]],
    outputs: Sequence[tuple[str, int, list[Any]]],
    nodes: Sequence[Any],
    initializers: Sequence[Any] = (),
) -> Path:
    """onnx.helper で小さなグラフを書き出す（構造が不正なモデル用）。"""
    from onnx import helper

    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


class TestTensorOutputModel:
    """プロジェクトのモデル（確率はテンソル出力）。"""

    def test_signature_is_derived_from_the_model(self, model_path: Path, label_path: Path) -> None:
        classifier = OnnxClassifier(model_path, label_path)
        sig = classifier.signature
        assert sig.input_width == 4
        assert sig.num_classes == 3
        assert sig.output_kind is OutputKind.TENSOR
        assert sig.input_type == "tensor(float)"
        assert sig.class_keys == ("0", "1", "2")
        assert classifier.input_dtype is np.float32
        assert classifier.labels == tuple(SPECIES)

    def test_predicts_probabilities_and_labels(self, model_path: Path, label_path: Path) -> None:
        classifier = OnnxClassifier(model_path, label_path)
        proba = classifier.predict_proba(SPECIES_ROWS)
        assert proba.shape == (3, 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        assert classifier.labels_of(proba) == SPECIES

    def test_sha256_matches_the_file(self, model_path: Path, label_path: Path) -> None:
        import hashlib

        expected = hashlib.sha256(model_path.read_bytes()).hexdigest()
        assert OnnxClassifier(model_path, label_path).sha256 == expected


class TestZipMapModel:
    """skl2onnx の既定（ZipMap 出力）で書き出したモデル。"""

    def test_own_zipmap_export(self, zipmap_model: ModelFiles) -> None:
        from sklearn.datasets import load_iris

        classifier = OnnxClassifier(zipmap_model.model, zipmap_model.labels)
        sig = classifier.signature
        assert sig.output_kind is OutputKind.ZIPMAP
        assert sig.output_type.startswith("seq(map(")
        assert (sig.input_width, sig.num_classes) == (4, 3)
        proba = classifier.predict_proba(SPECIES_ROWS)
        assert proba.dtype == np.float32
        assert classifier.labels_of(proba) == SPECIES
        features = load_iris().data.astype(np.float32)
        expected = zipmap_model.estimator.predict_proba(features)
        np.testing.assert_allclose(classifier.predict_proba(features), expected, atol=1e-5)

    @pytest.mark.reference
    def test_textbook_model(self, reference_dir: Path) -> None:
        classifier = OnnxClassifier(reference_dir / "iris_svc.onnx", reference_dir / "label.json")
        sig = classifier.signature
        assert (sig.input_name, sig.input_width, sig.num_classes) == ("float_input", 4, 3)
        assert sig.output_kind is OutputKind.ZIPMAP
        proba = classifier.predict_proba(SPECIES_ROWS)
        np.testing.assert_allclose(
            proba[0], [0.9709315896034241, 0.015583082102239132, 0.013485366478562355], atol=1e-6
        )
        assert classifier.labels_of(proba) == SPECIES


class TestNothingIrisSpecific:
    """特徴量数・クラス数はモデルから導く。"""

    def test_five_features_two_classes(self, binary_model: ModelFiles) -> None:
        classifier = OnnxClassifier(binary_model.model, binary_model.labels)
        assert classifier.signature.input_width == 5
        assert classifier.signature.num_classes == 2
        assert classifier.labels == ("negative", "positive")
        rows = np.array([[3, 0, 0, 0, 3], [-3, 0, 0, 0, -3]], dtype=np.float32)
        proba = classifier.predict_proba(rows)
        assert proba.shape == (2, 2)
        assert classifier.labels_of(proba) == ["positive", "negative"]

    def test_double_input(self, double_model: ModelFiles) -> None:
        classifier = OnnxClassifier(double_model.model, double_model.labels)
        assert classifier.input_dtype is np.float64
        assert classifier.signature.input_type == "tensor(double)"
        proba = classifier.predict_proba(np.array([[3, 0, 0, 0, 3]], dtype=np.float64))
        assert classifier.labels_of(proba) == ["yes"]

    def test_iris_labels_do_not_fit_a_two_class_model(
        self, binary_model: ModelFiles, tmp_path: Path
    ) -> None:
        labels = write_labels(tmp_path / "label.json", IRIS_LABELS)
        with pytest.raises(ModelLoadError, match=r"3 entries .* model has 2 classes"):
            OnnxClassifier(binary_model.model, labels)


class TestThreads:
    """ONNX Runtime のスレッド数は設定どおり。"""

    def test_session_options(self) -> None:
        options = session_options(3)
        assert options.intra_op_num_threads == 3
        assert options.inter_op_num_threads == 1
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL

    @pytest.mark.parametrize("threads", [1, 2])
    def test_applied_to_the_session(self, model_path: Path, label_path: Path, threads: int) -> None:
        classifier = OnnxClassifier(model_path, label_path, intra_op_threads=threads)
        assert classifier._session.get_session_options().intra_op_num_threads == threads


class TestLoadFailures:
    """壊れた入力では ModelLoadError で即座に止まり、理由が分かる。"""

    def test_missing_model(self, tmp_path: Path, label_path: Path) -> None:
        missing = tmp_path / "nope.onnx"
        with pytest.raises(ModelLoadError, match="model file not found") as info:
            OnnxClassifier(missing, label_path)
        assert str(missing) in info.value.message

    def test_model_path_is_a_directory(self, tmp_path: Path, label_path: Path) -> None:
        with pytest.raises(ModelLoadError, match="model file cannot be read"):
            OnnxClassifier(tmp_path, label_path)

    def test_corrupt_model(self, tmp_path: Path, label_path: Path) -> None:
        corrupt = tmp_path / "corrupt.onnx"
        corrupt.write_bytes(b"\x00garbage, not a protobuf\xff" * 10)
        with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
            OnnxClassifier(corrupt, label_path)

    def test_missing_label_file(self, model_path: Path, tmp_path: Path) -> None:
        with pytest.raises(ModelLoadError, match="label file not found"):
            OnnxClassifier(model_path, tmp_path / "label.json")

    def test_invalid_json_label(self, model_path: Path, tmp_path: Path) -> None:
        labels = tmp_path / "label.json"
        labels.write_text('{"0": "setosa",', encoding="utf-8")
        with pytest.raises(ModelLoadError, match="label file is not valid JSON"):
            OnnxClassifier(model_path, labels)

    def test_label_file_not_utf8(self, model_path: Path, tmp_path: Path) -> None:
        labels = tmp_path / "label.json"
        labels.write_bytes(b'{"0": "\xff"}')
        with pytest.raises(ModelLoadError, match="label file is not valid JSON"):
            OnnxClassifier(model_path, labels)

    @pytest.mark.parametrize(
        "content",
        [["setosa", "versicolor", "virginica"], {}, "setosa", None],
        ids=["list", "empty-object", "string", "null"],
    )
    def test_label_file_not_an_object(self, model_path: Path, tmp_path: Path, content: Any) -> None:
        labels = write_labels(tmp_path / "label.json", content)
        with pytest.raises(ModelLoadError, match="non-empty JSON object"):
            OnnxClassifier(model_path, labels)

    @pytest.mark.parametrize(
        "content",
        [
            {"0": "setosa", "1": "versicolor"},
            {"0": "a", "1": "b", "2": "c", "3": "d"},
            {"1": "setosa", "2": "versicolor", "3": "virginica"},
            {"setosa": "0", "versicolor": "1", "virginica": "2"},
        ],
        ids=["too-few", "too-many", "keys-from-1", "names-as-keys"],
    )
    def test_labels_do_not_match_classes(
        self, model_path: Path, tmp_path: Path, content: Any
    ) -> None:
        labels = write_labels(tmp_path / "label.json", content)
        with pytest.raises(ModelLoadError, match="model has 3 classes"):
            OnnxClassifier(model_path, labels)

    def test_label_values_not_strings(self, model_path: Path, tmp_path: Path) -> None:
        labels = write_labels(tmp_path / "label.json", {"0": 0, "1": "versicolor", "2": None})
        with pytest.raises(ModelLoadError, match="label names must be strings"):
            OnnxClassifier(model_path, labels)

    def test_load_labels_stringifies_keys(self, tmp_path: Path) -> None:
        path = tmp_path / "label.json"
        path.write_text(json.dumps({"0": "a", "1": "b"}), encoding="utf-8")
        assert load_labels(path) == {"0": "a", "1": "b"}


class TestUnsupportedModels:
    """分類器の形をしていないモデルは理由付きで拒否する。"""

    def test_two_inputs(self, tmp_path: Path, label_path: Path) -> None:
        from onnx import TensorProto, helper

        f = TensorProto.FLOAT
        model = _onnx_model(
            tmp_path / "m.onnx",
            [("a", f, [None, 3]), ("b", f, [None, 3])],
            [("y", f, [None, 3])],
            [helper.make_node("Add", ["a", "b"], ["y"])],
        )
        with pytest.raises(ModelLoadError, match="one input, found 2"):
            OnnxClassifier(model, label_path)

    def test_integer_input(self, tmp_path: Path, label_path: Path) -> None:
        from onnx import TensorProto, helper

        model = _onnx_model(
            tmp_path / "m.onnx",
            [("x", TensorProto.INT64, [None, 3])],
            [("y", TensorProto.FLOAT, [None, 3])],
            [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        )
        with pytest.raises(ModelLoadError, match=r"unsupported input type tensor\(int64\)"):
            OnnxClassifier(model, label_path)

    @pytest.mark.parametrize("shape", [[None], [None, "features"], [None, 3, 1]], ids=str)
    def test_input_not_batch_by_features(
        self, tmp_path: Path, label_path: Path, shape: list[Any]
    ) -> None:
        from onnx import TensorProto, helper

        model = _onnx_model(
            tmp_path / "m.onnx",
            [("x", TensorProto.FLOAT, shape)],
            [("y", TensorProto.FLOAT, shape)],
            [helper.make_node("Identity", ["x"], ["y"])],
        )
        with pytest.raises(ModelLoadError, match=r"input must have shape \[batch, features\]"):
            OnnxClassifier(model, label_path)

    def test_no_probability_output(self, tmp_path: Path, label_path: Path) -> None:
        from onnx import TensorProto, helper

        model = _onnx_model(
            tmp_path / "m.onnx",
            [("x", TensorProto.FLOAT, [None, 3])],
            [("y", TensorProto.INT64, [None, 3])],
            [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)],
        )
        with pytest.raises(ModelLoadError, match="no probability output"):
            OnnxClassifier(model, label_path)

    def test_probe_prediction_fails(self, tmp_path: Path, label_path: Path) -> None:
        from onnx import TensorProto, helper, numpy_helper

        shape = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "shape")
        model = _onnx_model(
            tmp_path / "m.onnx",
            [("x", TensorProto.FLOAT, [None, 3])],
            [("y", TensorProto.FLOAT, [2, 3]), ("label", TensorProto.INT64, [None])],
            [
                helper.make_node("Reshape", ["x", "shape"], ["y"]),
                helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
            ],
            [shape],
        )
        with pytest.raises(ModelLoadError, match="failed a probe prediction"):
            OnnxClassifier(model, label_path)


def _scored_model(path: Path, score_op: str) -> Path:
    """確率 = score_op(x)（Sqrt なら続けて Softmax）、ラベル = ArgMax の 3 クラスのモデル。"""
    from onnx import TensorProto, helper

    nodes = [helper.make_node(score_op, ["x"], ["s"])]
    if score_op == "Sqrt":  # 負の入力で NaN になる確率
        nodes.append(helper.make_node("Softmax", ["s"], ["p"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", ["s"], ["p"]))
    nodes.append(helper.make_node("ArgMax", ["p"], ["label"], axis=1, keepdims=0))
    return _onnx_model(
        path,
        [("x", TensorProto.FLOAT, [None, 3])],
        [("label", TensorProto.INT64, [None]), ("p", TensorProto.FLOAT, [None, 3])],
        nodes,
    )


class TestOnlyClassifiers:
    """確率の出力とラベルの出力を持つ分類器だけを提供する（回帰などは起動時に断る）。"""

    def test_multi_target_regressor_is_refused(self, tmp_path: Path, label_path: Path) -> None:
        from sklearn.linear_model import LinearRegression

        features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
        regressor = LinearRegression().fit(features, features[:, :3])
        model = tmp_path / "regressor.onnx"
        model.write_bytes(export_regressor(regressor, features[:1]))
        with pytest.raises(ModelLoadError, match="not a classifier: it has no label output"):
            OnnxClassifier(model, label_path)

    def test_scores_that_are_not_probabilities_are_refused(
        self, tmp_path: Path, label_path: Path
    ) -> None:
        model = _scored_model(tmp_path / "sigmoid.onnx", "Sigmoid")  # 各値は 0〜1 だが行和は 1.5
        with pytest.raises(ModelLoadError, match="not a probability distribution"):
            OnnxClassifier(model, label_path)

    def test_non_finite_output_on_the_probe_is_refused(
        self, tmp_path: Path, label_path: Path
    ) -> None:
        model = _scored_model(tmp_path / "log.onnx", "Log")  # log(0) = -inf
        with pytest.raises(ModelLoadError, match="not finite"):
            OnnxClassifier(model, label_path)

    @pytest.mark.parametrize("rows", [1, SMALL_BATCH_ROWS + 1], ids=["small", "large"])
    def test_non_finite_output_at_request_time_is_an_error(
        self, tmp_path: Path, label_path: Path, rows: int
    ) -> None:
        classifier = OnnxClassifier(_scored_model(tmp_path / "sqrt.onnx", "Sqrt"), label_path)
        good = np.ones((rows, 3), dtype=np.float32)
        assert np.isfinite(classifier.predict_proba(good)).all()
        bad = good.copy()
        bad[-1, 0] = -1.0  # sqrt(-1) = NaN
        with pytest.raises(NonFiniteOutputError, match="non-finite") as info:
            classifier.predict_proba(bad)
        assert info.value.status_code == 500

    def test_api_never_answers_200_with_non_finite_probabilities(
        self, tmp_path: Path, label_path: Path, make_settings: Any
    ) -> None:
        from fastapi.testclient import TestClient

        from model_in_image.api.app import create_app

        model = _scored_model(tmp_path / "sqrt.onnx", "Sqrt")
        settings = make_settings(model_filepath=model, label_filepath=label_path)
        with TestClient(create_app(settings)) as client:
            assert client.post("/predict", json={"data": [[1, 1, 1]]}).status_code == 200
            response = client.post("/predict", json={"data": [[-1, 1, 1]]})
            assert response.status_code == 500
            assert "non-finite" in response.json()["detail"]
            v2 = {
                "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [-1, 1, 1]}]
            }
            response = client.post("/v2/models/sqrt/infer", json=v2)
            assert response.status_code == 500
            assert "non-finite" in response.json()["error"]


class TestLabelFileRules:
    """ラベルファイル：重複・空の名前・大きすぎるファイルは拒否する。"""

    @pytest.mark.parametrize(
        ("labels", "message"),
        [
            ({"0": "setosa", "1": "setosa", "2": "setosa"}, "unique"),
            ({"0": "setosa", "1": " ", "2": "virginica"}, "must not be empty"),
            ({"0": "setosa", "1": "", "2": "virginica"}, "must not be empty"),
        ],
        ids=["duplicates", "blank", "empty"],
    )
    def test_bad_names(
        self, tmp_path: Path, model_path: Path, labels: dict[str, str], message: str
    ) -> None:
        with pytest.raises(ModelLoadError, match=message):
            OnnxClassifier(model_path, write_labels(tmp_path / "labels.json", labels))

    def test_oversized_file_is_refused_before_parsing(
        self, tmp_path: Path, model_path: Path
    ) -> None:
        path = tmp_path / "labels.json"
        huge = {"0": "a" * MAX_LABEL_FILE_BYTES, "1": "b", "2": "c"}
        path.write_text(json.dumps(huge), encoding="utf-8")
        with pytest.raises(ModelLoadError, match="over the limit"):
            OnnxClassifier(model_path, path)


def test_runtime_warnings_are_silenced_before_the_session(
    monkeypatch: pytest.MonkeyPatch, model_path: Path, label_path: Path
) -> None:
    """ORT の既定のロガーは色付きの平文を標準エラーに書く（JSON のログを壊す）：誤りだけにする。"""
    calls: list[str] = []
    real_session = ort.InferenceSession
    monkeypatch.setattr(
        ort, "set_default_logger_severity", lambda level: calls.append(f"severity {level}")
    )

    def session(*args: Any, **kwargs: Any) -> Any:
        calls.append("session")
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", session)
    OnnxClassifier(model_path, label_path)
    assert calls == ["severity 3", "session"]
