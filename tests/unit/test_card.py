"""持ち込みモデルのモデルカード：作る（サーバーと同じ規則）・参照分布・ビルド時の検査。"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_in_image.card import (
    CardInputError,
    check_model,
    create_card,
    parse_sample,
    read_reference,
    write_card,
)
from model_in_image.errors import ModelLoadError
from model_in_image.facts import ModelFacts
from model_in_image.modelcard import ModelCard, bin_counts
from model_in_image.runtime import sha256_of
from support.models import (
    MadeModel,
    ModelFiles,
    gradient_boosted,
    linear_regressor,
    logistic_double,
    open_model,
    predict_rows,
    write_labels,
)

IRIS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def gbdt(tmp_path_factory: pytest.TempPathFactory) -> MadeModel:
    """木のアンサンブル（12 特徴量・5 クラス・ZipMap）。"""
    return gradient_boosted(tmp_path_factory.mktemp("gbdt"))


@pytest.fixture(scope="module")
def logistic(tmp_path_factory: pytest.TempPathFactory) -> MadeModel:
    """float64 入力のロジスティック回帰（7 特徴量・3 クラス・テンソル出力）。"""
    return logistic_double(tmp_path_factory.mktemp("lr"))


def _csv(path: Path, rows: np.ndarray, header: list[str] | None = None) -> Path:
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class TestCreate:
    def test_iris_card_derives_everything_from_the_model(
        self, model_path: Path, label_path: Path
    ) -> None:
        card = create_card(model_path, label_path)
        assert card.name == "iris_svc"
        assert card.model_file == "iris_svc.onnx"
        assert card.sha256 == sha256_of(model_path)
        assert (card.input_name, card.input_dtype, card.input_width) == ("X", "float32", 4)
        assert card.classes == IRIS
        assert card.output_kind == "tensor"
        assert card.sample_input == [[0.0, 0.0, 0.0, 0.0]]
        assert card.reference is None
        assert card.model_extra is not None
        assert set(card.model_extra["validated_with"]) == {"model-in-image", "onnxruntime"}

    def test_the_committed_card_agrees_with_the_model(
        self, model_path: Path, label_path: Path, card_path: Path
    ) -> None:
        made, committed = create_card(model_path, label_path), ModelCard.read(card_path)
        fields = ("sha256", "input_name", "input_dtype", "input_width", "classes", "output_kind")
        assert {f: getattr(made, f) for f in fields} == {f: getattr(committed, f) for f in fields}

    @pytest.mark.parametrize(
        ("fixture", "dtype", "width", "kind", "classes"),
        [("gbdt", "float32", 12, "zipmap", 5), ("logistic", "float64", 7, "tensor", 3)],
    )
    def test_models_of_other_families_and_shapes(
        self,
        request: pytest.FixtureRequest,
        fixture: str,
        dtype: str,
        width: int,
        kind: str,
        classes: int,
    ) -> None:
        made: MadeModel = request.getfixturevalue(fixture)
        card = create_card(made.files.model, made.files.labels, name="my-model")
        assert card.name == "my-model"
        assert (card.input_dtype, card.input_width, card.output_kind) == (dtype, width, kind)
        assert card.classes == made.class_names
        assert len(card.classes) == classes

    def test_reference_data_gives_names_statistics_and_the_sample(
        self, logistic: MadeModel, tmp_path: Path
    ) -> None:
        names = [f"feature {i}" for i in range(7)]
        csv = _csv(tmp_path / "ref.csv", logistic.features[:120], names)
        card = create_card(logistic.files.model, logistic.files.labels, reference=csv)
        assert card.feature_names == names
        assert card.sample_input == [logistic.features[0].tolist()]
        assert card.reference is not None
        assert card.reference.rows == 120
        for feature, column in zip(card.reference.features, logistic.features[:120].T, strict=True):
            assert (feature.min, feature.max) == (column.min(), column.max())
            counts = bin_counts(feature.edges, column)
            assert [c / 120 for c in counts] == pytest.approx(feature.proportions, abs=1e-9)

    def test_reference_without_header_names_features_by_position(
        self, model_path: Path, label_path: Path, tmp_path: Path
    ) -> None:
        csv = _csv(tmp_path / "ref.csv", np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 2.9, 5.6, 1.8]]))
        card = create_card(model_path, label_path, reference=csv, sample=[[5.9, 3.0, 4.2, 1.5]])
        assert card.feature_names is None
        assert card.reference is not None
        assert [f.name for f in card.reference.features] == ["x0", "x1", "x2", "x3"]
        assert card.sample_input == [[5.9, 3.0, 4.2, 1.5]]

    def test_a_sample_the_model_does_not_accept_is_refused(
        self, model_path: Path, label_path: Path
    ) -> None:
        with pytest.raises(ModelLoadError, match="sample input does not fit the model"):
            create_card(model_path, label_path, sample=[[1.0, 2.0, 3.0]])


class TestRefusedModels:
    """サーバーが起動を拒むモデルはカードも作れない（理由つき）。"""

    def test_wrong_label_count(self, gbdt: MadeModel, tmp_path: Path) -> None:
        labels = write_labels(tmp_path / "labels.json", {"0": "a", "1": "b"})
        with pytest.raises(ModelLoadError, match=r"label file has 2 entries .* 5 classes"):
            create_card(gbdt.files.model, labels)

    def test_regressor_with_class_labels(self, tmp_path: Path) -> None:
        regressor = linear_regressor(tmp_path)
        # いまは出力 [N, 1] を 1 クラスと読み、ラベルの数で拒む（確率出力の検査が入ればそちらで）
        with pytest.raises(ModelLoadError, match=r"label file has 3 entries|probabilit"):
            create_card(regressor.model, regressor.labels)

    def test_not_an_onnx_file(self, label_path: Path, tmp_path: Path) -> None:
        bogus = tmp_path / "model.onnx"
        bogus.write_bytes(b"not a model")
        with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
            create_card(bogus, label_path)


class TestReferenceData:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("a,b\n", "no data rows"),
            ("1,2\n3,4,5\n", "line 2 has 3 columns"),
            ("a,b,c\n1,2\n", "line 1 has 3 columns"),
            ("1,2\n3,x\n", "could not convert"),
            ("1,2\n3,nan\n", "finite"),
        ],
    )
    def test_bad_reference_data(self, tmp_path: Path, text: str, message: str) -> None:
        path = tmp_path / "ref.csv"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(CardInputError, match=message):
            read_reference(path, 2)

    def test_missing_reference_file(self, tmp_path: Path) -> None:
        with pytest.raises(CardInputError, match="cannot read reference data"):
            read_reference(tmp_path / "missing.csv", 2)

    def test_blank_lines_are_skipped(self, tmp_path: Path) -> None:
        path = tmp_path / "ref.csv"
        path.write_text("x,y\n\n1,2\n\n3,4\n", encoding="utf-8")
        data, names = read_reference(path, 2)
        assert names == ["x", "y"]
        assert data.tolist() == [[1.0, 2.0], [3.0, 4.0]]


class TestSample:
    @pytest.mark.parametrize("text", ["[[5.1, 3.5, 1.4, 0.2]]", "[[5.1, 3.5, 1.4, 0]]"])
    def test_accepted_forms(self, text: str) -> None:
        assert parse_sample(text)[0][:2] == [5.1, 3.5]

    def test_rows_of_other_inputs_are_parsed_for_the_model_to_check(self) -> None:
        """文字列の入力・複数入力のモデルのサンプルも読める（型と形はモデルが確かめる）。"""
        assert parse_sample('[["great product"]]') == [["great product"]]
        assert parse_sample('[{"age": 55, "plan": "basic"}]') == [{"age": 55, "plan": "basic"}]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[[1, 2", "must be a JSON list of rows"),
            ('{"data": [[1]]}', "must be a JSON list of rows"),
            ("[]", "at least one non-empty row"),
            ("[[1], []]", "at least one non-empty row"),
        ],
    )
    def test_refused_forms(self, text: str, message: str) -> None:
        with pytest.raises(CardInputError, match=message):
            parse_sample(text)


class TestCheck:
    """イメージのビルドの検査：サーバーの起動と同じ読み込み + カードとビルド引数の一致。"""

    def test_the_project_model_passes_and_gives_the_build_arguments(
        self, model_path: Path, label_path: Path, card_path: Path
    ) -> None:
        facts = check_model(model_path, label_path, card_path)
        assert facts.build_args() == {
            "MODEL_FILE": "iris_svc.onnx",
            "MODEL_NAME": "iris_svc",
            "MODEL_SHA256": sha256_of(model_path),
            "MODEL_CLASSES": json.dumps(IRIS, separators=(",", ":")),
            "MODEL_INPUT_WIDTH": "4",
            "MODEL_POSTPROCESS": "none",
        }
        # 自分の出力を期待値として渡せば通る（書き方の違い：空白・大文字の sha256 は許す）
        expected = {**facts.build_args(), "MODEL_CLASSES": json.dumps(IRIS)}
        expected["MODEL_SHA256"] = expected["MODEL_SHA256"].upper()
        assert check_model(model_path, label_path, card_path, expected) == facts

    @pytest.mark.parametrize(
        ("key", "value", "message"),
        [
            ("MODEL_INPUT_WIDTH", "5", "MODEL_INPUT_WIDTH=5 does not match the model"),
            ("MODEL_INPUT_WIDTH", "four", "MODEL_INPUT_WIDTH=four does not match"),
            ("MODEL_CLASSES", '["a","b","c"]', "MODEL_CLASSES"),
            ("MODEL_CLASSES", "[not json", "MODEL_CLASSES"),
            ("MODEL_NAME", "other", "MODEL_NAME=other"),
            ("MODEL_FILE", "other.onnx", "MODEL_FILE=other.onnx"),
            ("MODEL_SHA256", "0" * 64, "integrity check failed"),
            ("MODEL_SHA256", "", "MODEL_SHA256= does not match"),
        ],
    )
    def test_build_arguments_must_match(
        self,
        model_path: Path,
        label_path: Path,
        card_path: Path,
        key: str,
        value: str,
        message: str,
    ) -> None:
        with pytest.raises(ModelLoadError, match=message):
            check_model(model_path, label_path, card_path, {key: value})

    def test_unknown_build_argument(
        self, model_path: Path, label_path: Path, card_path: Path
    ) -> None:
        with pytest.raises(CardInputError, match="unknown build argument MODEL_COLOUR"):
            check_model(model_path, label_path, card_path, {"MODEL_COLOUR": "red"})

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("input_width", 5),
            ("classes", ["a", "b", "c"]),
            ("input_dtype", "float64"),
            ("output_kind", "zipmap"),
            ("input_name", "float_input"),
        ],
    )
    def test_card_claims_must_match_the_model(
        self,
        model_path: Path,
        label_path: Path,
        card_path: Path,
        tmp_path: Path,
        field: str,
        value: object,
    ) -> None:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
        raw[field] = value
        if field == "input_width":  # 特徴量名と参照分布は幅と揃っていなければ読めない
            raw["feature_names"] = raw["reference"] = None
        lying = tmp_path / "model_card.json"
        lying.write_text(json.dumps(raw), encoding="utf-8")
        with pytest.raises(ModelLoadError, match=f"model card {field} is"):
            check_model(model_path, label_path, lying)

    def test_same_rules_as_the_server_labels(self, gbdt: MadeModel, tmp_path: Path) -> None:
        card = tmp_path / "model_card.json"
        write_card(create_card(gbdt.files.model, gbdt.files.labels), card, force=False)
        wrong = write_labels(tmp_path / "wrong.json", {"0": "a", "1": "b", "2": "c"})
        with pytest.raises(ModelLoadError, match="label file has 3 entries"):
            check_model(gbdt.files.model, wrong, card)

    def test_card_of_another_model(self, gbdt: MadeModel, card_path: Path) -> None:
        with pytest.raises(ModelLoadError, match="integrity check failed"):
            check_model(gbdt.files.model, gbdt.files.labels, card_path)

    def test_facts_of_a_classifier(self, gbdt: MadeModel) -> None:
        facts = ModelFacts.of(open_model(gbdt.files.model, gbdt.files.labels), "churn")
        assert facts.build_args()["MODEL_CLASSES"] == json.dumps(
            gbdt.class_names, separators=(",", ":")
        )
        assert facts.output_kind == "zipmap"


class TestWrite:
    def test_existing_file_needs_force(
        self, model_path: Path, label_path: Path, tmp_path: Path
    ) -> None:
        card = create_card(model_path, label_path)
        target = tmp_path / "model_card.json"
        write_card(card, target, force=False)
        assert ModelCard.read(target) == card
        with pytest.raises(CardInputError, match="--force"):
            write_card(card, target, force=False)
        write_card(card, target, force=True)

    def test_unwritable_target(self, model_path: Path, label_path: Path, tmp_path: Path) -> None:
        with pytest.raises(CardInputError, match="cannot write"):
            write_card(
                create_card(model_path, label_path), tmp_path / "no" / "card.json", force=False
            )


def test_exported_tree_model_matches_scikit_learn(gbdt: MadeModel) -> None:
    """前提：書き出した木のモデルは元のモデルと同じ確率を返す（コンテナのテストも同じモデルを使う）。"""
    assert isinstance(gbdt.files, ModelFiles)
    classifier = open_model(gbdt.files.model, gbdt.files.labels)
    np.testing.assert_allclose(
        predict_rows(classifier, gbdt.features[:20]), gbdt.expected_proba()[:20], atol=1e-5
    )
