"""動物園のモデルの起動時の規則：ラベルファイルとグラフのクラス、後処理、ロケールの不足。"""

from __future__ import annotations

import json
import locale
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from model_in_image.errors import ModelLoadError
from model_in_image.loading import load_dataplane
from model_in_image.settings import Settings
from support.zoo import Serve, load_case, softmax, v2_outputs


def _labels(tmp_path: Path, mapping: dict[str, str]) -> Path:
    path = tmp_path / "label.json"
    path.write_text(json.dumps(mapping), encoding="utf-8")
    return path


def _classes(name: str, labels: Path | None) -> tuple[str, ...]:
    settings = Settings(model_filepath=load_case(name).model, label_filepath=labels)
    return load_dataplane(settings, card=False).labels


@pytest.mark.usefixtures("clean_env")
def test_a_label_file_in_target_names_order_is_refused(tmp_path: Path) -> None:
    """target_names の順（['malignant', 'benign']）のラベルファイルは名前を入れ替える：拒否。"""
    labels = _labels(tmp_path, {"0": "malignant", "1": "benign"})
    with pytest.raises(ModelLoadError, match=r"column 0 to 'malignant'.*class 'benign'"):
        _classes("sklearn_string_labels", labels)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("name", "mapping", "expected"),
    [
        (
            "sklearn_string_labels",
            {"malignant": "cancer", "benign": "harmless"},
            ("harmless", "cancer"),
        ),
        ("sklearn_string_labels", {"0": "benign", "1": "malignant"}, ("benign", "malignant")),
        (
            "sklearn_class_codes",
            {"10": "ten", "3": "three", "7": "seven"},
            ("three", "seven", "ten"),
        ),
        ("sklearn_class_codes", {"0": "a", "1": "b", "2": "c"}, ("a", "b", "c")),
        ("torch_mlp_logits", {"0": "setosa", "1": "versicolor", "2": "virginica"}, None),
    ],
)
def test_a_label_file_keyed_by_class_or_column(
    tmp_path: Path, name: str, mapping: dict[str, str], expected: tuple[str, ...] | None
) -> None:
    """ラベルファイルは列の番号でもグラフのクラスでも引ける（列の順の名前になる）。"""
    names = _classes(name, _labels(tmp_path, mapping))
    assert names == (expected or tuple(mapping.values()))


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("name", "mapping", "message"),
    [
        ("sklearn_class_codes", {"0": "a", "1": "b"}, "has 2 entries"),
        ("sklearn_class_codes", {"3": "a", "7": "b", "11": "c"}, "expected keys"),
        ("sklearn_gbr", {"0": "a"}, "the model has no classes"),
    ],
)
def test_a_label_file_that_does_not_fit_is_refused(
    tmp_path: Path, name: str, mapping: dict[str, str], message: str
) -> None:
    """数の合わない・グラフに無いキーの・クラスの無いモデルへのラベルファイルは起動時に拒否する。"""
    with pytest.raises(ModelLoadError, match=message):
        _classes(name, _labels(tmp_path, mapping))


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sklearn_logreg_zipmap", ("0", "1", "2")),
        ("sklearn_class_codes", ("3", "7", "10")),
        ("sklearn_string_labels", ("benign", "malignant")),
        ("torch_mlp_softmax", ("0", "1", "2")),
    ],
)
def test_without_a_label_file_names_come_from_the_graph(
    name: str, expected: tuple[str, ...]
) -> None:
    """ラベルファイルなし：グラフのクラス（整数は "3"）、ネットは列の番号。Iris は借りない。"""
    assert _classes(name, None) == expected


def test_softmax_postprocess_turns_logits_into_the_framework_probabilities(serve: Serve) -> None:
    """MODEL_POSTPROCESS=softmax：ロジットの /predict と V2 は softmax(フレームワークの値)。"""
    case = load_case("torch_mlp_logits")
    client = serve(case.name, model_postprocess="softmax")
    expected = softmax(case.prediction.values)
    body: dict[str, Any] = {"data": case.rows}
    got = np.asarray(client.post("/predict", json=body).json()["prediction"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert case.labels is not None
    labels = client.post("/predict/label", json=body).json()["prediction"]
    assert labels == case.labels.values
    v2 = v2_outputs(client, case)
    np.testing.assert_allclose(v2["probabilities"], expected, rtol=1e-5, atol=1e-6)
    metadata = client.get("/metadata").json()
    assert (metadata["kind"], metadata["postprocess"]) == ("logits", "softmax")


def _has_locale(name: str) -> bool:
    saved = locale.setlocale(locale.LC_ALL)
    try:
        locale.setlocale(locale.LC_ALL, name)
    except locale.Error:
        return False
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return True


@pytest.mark.usefixtures("clean_env")
def test_a_text_model_needing_a_missing_locale_says_so(tmp_path: Path) -> None:
    """skl2onnx の既定（StringNormalizer のロケール en_US.UTF-8）の書き出しを、ロケールの無い
    マシンで起動すると、モデルが壊れているとは言わずに、足りないロケールと直し方を述べる。"""
    model = onnx.load(load_case("sklearn_tfidf_text").model)
    for node in model.graph.node:
        kept = [a for a in node.attribute if a.name != "locale"]
        del node.attribute[:]
        node.attribute.extend(kept)
    path = tmp_path / "tfidf_default_locale.onnx"
    onnx.save(model, path)
    settings = Settings(model_filepath=path)
    if _has_locale("en_US.UTF-8"):
        assert load_dataplane(settings, card=False).labels == ("negative", "positive")
        return
    with pytest.raises(
        ModelLoadError, match=r"needs the locale en_US\.UTF-8.*'locale': 'C\.UTF-8'"
    ):
        load_dataplane(settings, card=False)
