"""OnnxModel と読み込み：分類器（テンソル・ZipMap）とほかの種類、モデルから導く情報、即時の拒否。"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from model_in_image.dataplane import DataPlane, Limits
from model_in_image.errors import InvalidInputError, ModelLoadError, NoClassesError
from model_in_image.model.kinds import ModelKind, Postprocess
from model_in_image.model.onnx_model import OnnxModel
from model_in_image.runtime import (
    MAX_LABEL_FILE_BYTES,
    SMALL_BATCH_ROWS,
    NonFiniteOutputError,
    load_labels,
    model_sha256,
    session_options,
)
from support.models import ModelFiles, export_regressor, open_model, predict_rows, write_labels
from support.samples import IRIS_LABELS

SPECIES_ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]], dtype=np.float32
)
SPECIES = ["setosa", "versicolor", "virginica"]


def _load(model: Path, labels: Path | None) -> DataPlane:
    return open_model(model, labels)  # type: ignore[no-any-return]


def _model(path: Path, **kwargs: Any) -> OnnxModel:
    return OnnxModel(path, sha256=model_sha256(path), **kwargs)


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
        plane = _load(model_path, label_path)
        model = plane.model
        (spec,) = model.signature.inputs
        assert (spec.width, spec.onnx_type, spec.dtype) == (4, "tensor(float)", np.float32)
        assert model.kind is ModelKind.CLASSIFIER
        assert model.num_classes == 3
        assert not model.heads.zipmap
        assert model.class_codes == ("0", "1", "2")
        assert plane.input_width == 4
        assert plane.labels == tuple(SPECIES)

    def test_predicts_probabilities_and_labels(self, model_path: Path, label_path: Path) -> None:
        plane = _load(model_path, label_path)
        proba = predict_rows(plane, SPECIES_ROWS)
        assert proba.shape == (3, 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        assert plane.labels_of(proba) == SPECIES

    def test_sha256_matches_the_file(self, model_path: Path, label_path: Path) -> None:
        import hashlib

        expected = hashlib.sha256(model_path.read_bytes()).hexdigest()
        assert _load(model_path, label_path).model.sha256 == expected

    def test_the_graph_names_its_producer(self, model_path: Path) -> None:
        graph = _model(model_path).graph
        assert graph.producer_name == "skl2onnx"
        assert graph.opsets["ai.onnx"] >= 9


class TestZipMapModel:
    """skl2onnx の既定（ZipMap 出力）で書き出したモデル。"""

    def test_own_zipmap_export(self, zipmap_model: ModelFiles) -> None:
        from sklearn.datasets import load_iris

        plane = _load(zipmap_model.model, zipmap_model.labels)
        model = plane.model
        assert model.heads.zipmap
        assert model.signature.output(model.heads.primary).onnx_type.startswith("seq(map(")
        assert (plane.input_width, model.num_classes) == (4, 3)
        proba = predict_rows(plane, SPECIES_ROWS)
        assert proba.dtype == np.float32
        assert plane.labels_of(proba) == SPECIES
        features = load_iris().data.astype(np.float32)
        expected = zipmap_model.estimator.predict_proba(features)
        np.testing.assert_allclose(predict_rows(plane, features), expected, atol=1e-5)

    @pytest.mark.reference
    def test_textbook_model(self, reference_dir: Path) -> None:
        plane = _load(reference_dir / "iris_svc.onnx", reference_dir / "label.json")
        (spec,) = plane.model.signature.inputs
        assert (spec.name, spec.width, plane.model.num_classes) == ("float_input", 4, 3)
        assert plane.model.heads.zipmap
        proba = predict_rows(plane, SPECIES_ROWS)
        np.testing.assert_allclose(
            proba[0], [0.9709315896034241, 0.015583082102239132, 0.013485366478562355], atol=1e-6
        )
        assert plane.labels_of(proba) == SPECIES

    @pytest.mark.reference
    def test_textbook_model_without_a_label_file_uses_its_own_codes(
        self, reference_dir: Path
    ) -> None:
        """ラベルファイルが無ければグラフのクラスのコード（Iris の名前は勝手に付けない）。"""
        plane = _load(reference_dir / "iris_svc.onnx", None)
        assert plane.labels == ("0", "1", "2")
        assert plane.labels_of(predict_rows(plane, SPECIES_ROWS)) == ["0", "1", "2"]


class TestNothingIrisSpecific:
    """特徴量数・クラス数はモデルから導く。"""

    def test_five_features_two_classes(self, binary_model: ModelFiles) -> None:
        plane = _load(binary_model.model, binary_model.labels)
        assert plane.input_width == 5
        assert plane.model.num_classes == 2
        assert plane.labels == ("negative", "positive")
        proba = predict_rows(plane, [[3, 0, 0, 0, 3], [-3, 0, 0, 0, -3]])
        assert proba.shape == (2, 2)
        assert plane.labels_of(proba) == ["positive", "negative"]

    def test_double_input(self, double_model: ModelFiles) -> None:
        plane = _load(double_model.model, double_model.labels)
        (spec,) = plane.model.signature.inputs
        assert (spec.dtype, spec.onnx_type) == (np.float64, "tensor(double)")
        feeds = plane.validate([[3, 0, 0, 0, 3]], loc=("data",))
        assert feeds[spec.name].dtype == np.float64
        assert plane.labels_of(plane.predict(feeds)) == ["yes"]

    def test_iris_labels_do_not_fit_a_two_class_model(
        self, binary_model: ModelFiles, tmp_path: Path
    ) -> None:
        labels = write_labels(tmp_path / "label.json", IRIS_LABELS)
        with pytest.raises(ModelLoadError, match=r"3 entries .* model has 2 classes"):
            _load(binary_model.model, labels)


class TestThreads:
    """ONNX Runtime のスレッド数は設定どおり。"""

    def test_session_options(self) -> None:
        options = session_options(3)
        assert options.intra_op_num_threads == 3
        assert options.inter_op_num_threads == 1
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL

    @pytest.mark.parametrize("threads", [1, 2])
    def test_applied_to_the_session(self, model_path: Path, label_path: Path, threads: int) -> None:
        model = _model(model_path, intra_op_threads=threads)
        assert model._session.get_session_options().intra_op_num_threads == threads


class TestLoadFailures:
    """壊れた入力では ModelLoadError で即座に止まり、理由が分かる。"""

    def test_missing_model(self, tmp_path: Path, label_path: Path) -> None:
        missing = tmp_path / "nope.onnx"
        with pytest.raises(ModelLoadError, match="model file not found") as info:
            _load(missing, label_path)
        assert str(missing) in info.value.message

    def test_model_path_is_a_directory(self, tmp_path: Path, label_path: Path) -> None:
        with pytest.raises(ModelLoadError, match="model file cannot be read"):
            _load(tmp_path, label_path)

    def test_corrupt_model(self, tmp_path: Path, label_path: Path) -> None:
        corrupt = tmp_path / "corrupt.onnx"
        corrupt.write_bytes(b"\x00garbage, not a protobuf\xff" * 10)
        with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
            _load(corrupt, label_path)

    def test_missing_label_file(self, model_path: Path, tmp_path: Path) -> None:
        with pytest.raises(ModelLoadError, match="label file not found"):
            _load(model_path, tmp_path / "label.json")

    def test_invalid_json_label(self, model_path: Path, tmp_path: Path) -> None:
        labels = tmp_path / "label.json"
        labels.write_text('{"0": "setosa",', encoding="utf-8")
        with pytest.raises(ModelLoadError, match="label file is not valid JSON"):
            _load(model_path, labels)

    def test_label_file_not_utf8(self, model_path: Path, tmp_path: Path) -> None:
        labels = tmp_path / "label.json"
        labels.write_bytes(b'{"0": "\xff"}')
        with pytest.raises(ModelLoadError, match="label file is not valid JSON"):
            _load(model_path, labels)

    @pytest.mark.parametrize(
        "content",
        [["setosa", "versicolor", "virginica"], {}, "setosa", None],
        ids=["list", "empty-object", "string", "null"],
    )
    def test_label_file_not_an_object(self, model_path: Path, tmp_path: Path, content: Any) -> None:
        labels = write_labels(tmp_path / "label.json", content)
        with pytest.raises(ModelLoadError, match="non-empty JSON object"):
            _load(model_path, labels)

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
            _load(model_path, labels)

    def test_label_values_not_strings(self, model_path: Path, tmp_path: Path) -> None:
        labels = write_labels(tmp_path / "label.json", {"0": 0, "1": "versicolor", "2": None})
        with pytest.raises(ModelLoadError, match="label names must be strings"):
            _load(model_path, labels)

    def test_load_labels_stringifies_keys(self, tmp_path: Path) -> None:
        path = tmp_path / "label.json"
        path.write_text(json.dumps({"0": "a", "1": "b"}), encoding="utf-8")
        assert load_labels(path) == {"0": "a", "1": "b"}


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


def _unary(
    path: Path, op: str, in_type: int, out_type: int, shape: list[Any], **attrs: Any
) -> Path:
    """入力 x → op → 出力 y の 1 演算のモデル。"""
    from onnx import helper

    return _onnx_model(
        path,
        [("x", in_type, shape)],
        [("y", out_type, shape)],
        [helper.make_node(op, ["x"], ["y"], **attrs)],
    )


class TestEveryKindIsServed:
    """分類器でないモデルも、グラフから種類を決めて提供する（拒否しない）。"""

    def test_two_inputs_take_rows_keyed_by_input_name(self, tmp_path: Path) -> None:
        from onnx import TensorProto, helper

        f = TensorProto.FLOAT
        path = _onnx_model(
            tmp_path / "m.onnx",
            [("a", f, [None, 3]), ("b", f, [None, 3])],
            [("y", f, [None, 3])],
            [helper.make_node("Add", ["a", "b"], ["y"])],
        )
        plane = _load(path, None)
        assert [spec.name for spec in plane.model.signature.inputs] == ["a", "b"]
        assert plane.input_width is None
        rows = [{"a": [1, 2, 3], "b": [10, 20, 30]}, {"b": [0, 0, 1], "a": [0, 0, 0]}]
        values = plane.predict(plane.validate(rows, loc=("data",)))
        np.testing.assert_allclose(values, [[11, 22, 33], [0, 0, 1]])

    def test_integer_input(self, tmp_path: Path) -> None:
        from onnx import TensorProto

        path = _unary(
            tmp_path / "m.onnx",
            "Cast",
            TensorProto.INT64,
            TensorProto.FLOAT,
            [None, 3],
            to=TensorProto.FLOAT,
        )
        plane = _load(path, None)
        feeds = plane.validate([[1, 2, 2**40]], loc=("data",))
        assert feeds["x"].dtype == np.int64
        np.testing.assert_allclose(plane.predict(feeds), [[1, 2, 2**40]])
        with pytest.raises(InvalidInputError, match="expects an integer"):
            plane.validate([[1, 2, 2.5]], loc=("data",))

    def test_string_input_and_output_is_a_tensor_model(self, tmp_path: Path) -> None:
        from onnx import TensorProto

        s = TensorProto.STRING
        plane = _load(_unary(tmp_path / "m.onnx", "Identity", s, s, [None, 1]), None)
        assert plane.kind is ModelKind.TENSOR
        # [N, 1] の入力は行ごとにスカラーでもよい
        values = plane.predict(plane.validate(["great product", ["awful"]], loc=("data",)))
        assert values.tolist() == [["great product"], ["awful"]]
        with pytest.raises(NoClassesError, match="tensor: it has no class labels"):
            plane.labels_of(values)

    def test_one_dimensional_output_is_a_regressor(self, tmp_path: Path) -> None:
        from onnx import TensorProto

        f = TensorProto.FLOAT
        plane = _load(_unary(tmp_path / "m.onnx", "Identity", f, f, [None]), None)
        assert plane.kind is ModelKind.REGRESSOR
        assert plane.predict(plane.validate([1.5, -2.0], loc=("data",))).tolist() == [1.5, -2.0]

    def test_rank_three_output_is_a_tensor_model(self, tmp_path: Path) -> None:
        from onnx import TensorProto

        f = TensorProto.FLOAT
        plane = _load(_unary(tmp_path / "m.onnx", "Identity", f, f, [None, 3, 1]), None)
        assert plane.kind is ModelKind.TENSOR
        values = plane.predict(plane.validate([[[1], [2], [3]]], loc=("data",)))
        assert values.shape == (1, 3, 1)

    def test_multi_target_regressor(self, tmp_path: Path, label_path: Path) -> None:
        from sklearn.linear_model import LinearRegression

        features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
        regressor = LinearRegression().fit(features, features[:, :3] * 2 + 1)
        model = tmp_path / "regressor.onnx"
        model.write_bytes(export_regressor(regressor, features[:1]))
        plane = _load(model, None)
        assert plane.kind is ModelKind.REGRESSOR
        values = predict_rows(plane, features)
        np.testing.assert_allclose(values, regressor.predict(features), atol=1e-4)
        with pytest.raises(NoClassesError, match="regressor: it has no class labels"):
            plane.labels_of(values)
        # ラベルファイルはクラスの無いモデルには付けられない
        with pytest.raises(ModelLoadError, match="the model has no classes"):
            _load(model, label_path)

    def test_scores_that_are_not_probabilities_are_served_as_tensors(self, tmp_path: Path) -> None:
        plane = _load(_scored_model(tmp_path / "sigmoid.onnx", "Sigmoid"), None)  # 行和は 1.5
        assert plane.kind is ModelKind.TENSOR
        assert plane.model.heads.primary == "label"

    def test_logits_net_with_postprocess_softmax(self, tmp_path: Path, label_path: Path) -> None:
        from onnx import TensorProto

        f = TensorProto.FLOAT
        path = _unary(tmp_path / "m.onnx", "Identity", f, f, [None, 3])
        assert _load(path, None).kind is ModelKind.LOGITS
        model = _model(path, postprocess=Postprocess.SOFTMAX)
        plane = DataPlane(model, "m", [[0.0, 0.0, 0.0]], Limits(10), classes=tuple(SPECIES))
        proba = plane.predict(plane.validate([[0.0, 5.0, 1.0]], loc=("data",)))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        assert plane.labels_of(proba) == ["versicolor"]
        assert model.gives_probabilities

    def test_nets_without_class_metadata_are_named_by_column(
        self, tmp_path: Path, label_path: Path
    ) -> None:
        """クラスの情報の無いネットは列の番号がクラス名。ラベルファイルは列の番号で名前を付ける。"""
        from onnx import TensorProto

        f = TensorProto.FLOAT
        path = _unary(tmp_path / "m.onnx", "Identity", f, f, [None, 3])
        plane = _load(path, None)
        assert plane.labels == ("0", "1", "2")
        rows = [[0.1, 2.0, -1.0], [5.0, 0.0, 0.0]]
        assert plane.labels_of(predict_rows(plane, rows)) == ["1", "0"]
        named = _load(path, label_path)
        assert named.labels_of(predict_rows(named, rows)) == ["versicolor", "setosa"]

    def test_postprocess_is_refused_on_a_classifier(self, model_path: Path) -> None:
        with pytest.raises(ModelLoadError, match="MODEL_POSTPROCESS=softmax needs a model"):
            _model(model_path, postprocess=Postprocess.SOFTMAX)

    @pytest.mark.parametrize(("batch", "rows"), [(1, 5), (2, 3), (4, 4)])
    def test_fixed_batch_dimension_takes_any_number_of_rows(
        self, tmp_path: Path, batch: int, rows: int
    ) -> None:
        from onnx import TensorProto

        f = TensorProto.FLOAT
        path = _unary(tmp_path / "m.onnx", "Softmax", f, f, [batch, 4], axis=1)
        plane = _load(path, None)
        assert plane.model.fixed_batch == batch
        assert plane.kind is ModelKind.PROBABILITIES
        features = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) / 7
        values = predict_rows(plane, features)
        assert values.shape == (rows, 4)
        shifted = np.exp(features - features.max(axis=1, keepdims=True))
        np.testing.assert_allclose(values, shifted / shifted.sum(axis=1, keepdims=True), atol=1e-6)


class TestRefused:
    """提供できないものだけを、入出力の名前と理由を挙げて拒否する。"""

    def test_scalar_input(self, tmp_path: Path) -> None:
        from onnx import TensorProto

        f = TensorProto.FLOAT
        with pytest.raises(ModelLoadError, match="input 'x' is a scalar"):
            _load(_unary(tmp_path / "m.onnx", "Identity", f, f, []), None)

    def test_sequence_input(self, tmp_path: Path) -> None:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("SequenceLength", ["xs"], ["n"])],
            "g",
            [helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = tmp_path / "m.onnx"
        path.write_bytes(model.SerializeToString())
        with pytest.raises(
            ModelLoadError, match=r"unsupported input type for input 'xs'.*supported"
        ):
            _load(path, None)

    def test_probe_prediction_fails_on_the_sample(self, tmp_path: Path, label_path: Path) -> None:
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
        with pytest.raises(ModelLoadError, match="failed a prediction on the sample input"):
            _load(model, label_path)

    def test_non_finite_output_on_the_sample_is_refused(
        self, tmp_path: Path, label_path: Path
    ) -> None:
        from onnx import TensorProto

        f = TensorProto.FLOAT
        model = _unary(tmp_path / "log.onnx", "Log", f, f, [None, 3])  # log(0) = -inf
        with pytest.raises(ModelLoadError, match="non-finite"):
            _load(model, None)

    def test_non_finite_secondary_output_is_an_error_in_v2(self, tmp_path: Path) -> None:
        """/predict が返さない出力も、V2 で返すなら有限であること。"""
        plane = _load(_scored_model(tmp_path / "log.onnx", "Log"), None)
        assert plane.kind is ModelKind.TENSOR  # 行和が 1 でない：確率とはみなさない
        with pytest.raises(NonFiniteOutputError, match="non-finite"):
            plane.infer(plane.validate([[0.0, 1.0, 1.0]], loc=("data",)))


class TestNonFiniteOutputs:
    """有限でない出力は 200 で返さない。"""

    @pytest.mark.parametrize("rows", [1, SMALL_BATCH_ROWS + 1], ids=["small", "large"])
    def test_non_finite_output_at_request_time_is_an_error(
        self, tmp_path: Path, label_path: Path, rows: int
    ) -> None:
        plane = _load(_scored_model(tmp_path / "sqrt.onnx", "Sqrt"), label_path)
        assert plane.kind is ModelKind.CLASSIFIER
        good = np.ones((rows, 3), dtype=np.float32)
        assert np.isfinite(predict_rows(plane, good)).all()
        bad = good.copy()
        bad[-1, 0] = -1.0  # sqrt(-1) = NaN
        with pytest.raises(NonFiniteOutputError, match="non-finite") as info:
            predict_rows(plane, bad)
        assert info.value.status_code == 500

    def test_api_never_answers_200_with_non_finite_probabilities(
        self, tmp_path: Path, label_path: Path, make_settings: Any
    ) -> None:
        from fastapi.testclient import TestClient

        from model_in_image.api.app import create_app

        model = _scored_model(tmp_path / "sqrt.onnx", "Sqrt")
        settings = make_settings(
            model_filepath=model, label_filepath=label_path, sample_data=[[1, 1, 1]]
        )
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
            _load(model_path, write_labels(tmp_path / "labels.json", labels))

    def test_oversized_file_is_refused_before_parsing(
        self, tmp_path: Path, model_path: Path
    ) -> None:
        path = tmp_path / "labels.json"
        huge = {"0": "a" * MAX_LABEL_FILE_BYTES, "1": "b", "2": "c"}
        path.write_text(json.dumps(huge), encoding="utf-8")
        with pytest.raises(ModelLoadError, match="over the limit"):
            _load(model_path, path)


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
    _load(model_path, label_path)
    assert calls == ["severity 3", "session"]
