"""card --accuracy-csv FILE --target COLUMN（held-out の正解率）と library_versions。"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_in_image.cli import main
from model_in_image.heldout import class_index
from support.models import linear_regressor
from support.samples import SETOSA, VERSICOLOR, VIRGINICA

Capture = pytest.CaptureFixture[str]
HEADER = "sepal_length,sepal_width,petal_length,petal_width,species\n"


def _row(values: list[float], target: str) -> str:
    return ",".join(map(str, values)) + f",{target}\n"


def _card(capsys: Capture, model: Path, labels: Path | None, *extra: str, code: int = 0) -> Any:
    args = ["card", "--model", str(model), "--output", "-", *extra]
    args += ["--labels", str(labels)] if labels is not None else []
    assert main(args) == code
    captured = capsys.readouterr()
    return json.loads(captured.out) if code == 0 else captured.err


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "heldout.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("targets", "accuracy"),
    [
        (["setosa", "versicolor", "virginica", "setosa"], 0.75),
        (["0", "1", "2", "2"], 1.0),
        (["0.0", "1.0", "2.0", "0"], 0.75),
    ],
    ids=["names", "codes", "pandas-floats"],
)
def test_accuracy_from_a_labelled_csv(
    tmp_path: Path,
    capsys: Capture,
    model_path: Path,
    label_path: Path,
    targets: list[str],
    accuracy: float,
) -> None:
    rows = [SETOSA, VERSICOLOR, VIRGINICA, VIRGINICA]
    text = HEADER + "".join(_row(r, t) for r, t in zip(rows, targets, strict=True))
    path = _csv(tmp_path, text)
    card = _card(capsys, model_path, label_path, "--accuracy-csv", str(path), "--target", "species")
    assert card["heldout_accuracy"] == accuracy


def test_target_column_anywhere_and_features_by_reference_names(
    tmp_path: Path, capsys: Capture, model_path: Path, label_path: Path
) -> None:
    """参照データの見出しが特徴量名なら、検証データの列は名前で選ぶ（並びが違っても）。"""
    reference = tmp_path / "ref.csv"
    reference.write_text("a,b,c,d\n" + ",".join(map(str, SETOSA)) + "\n", encoding="utf-8")
    a, b, c, d = VIRGINICA
    path = _csv(tmp_path, f"y,d,c,b,a\nvirginica,{d},{c},{b},{a}\n")
    extra = ["--reference", str(reference), "--accuracy-csv", str(path), "--target", "y"]
    assert _card(capsys, model_path, label_path, *extra)["heldout_accuracy"] == 1.0


def test_without_accuracy_it_stays_null(
    capsys: Capture, model_path: Path, label_path: Path
) -> None:
    assert _card(capsys, model_path, label_path)["heldout_accuracy"] is None


def test_library_versions_come_from_the_graph(
    capsys: Capture, model_path: Path, label_path: Path
) -> None:
    versions = _card(capsys, model_path, label_path)["library_versions"]
    assert set(versions) == {"skl2onnx", "ai.onnx-opset", "ai.onnx.ml-opset"}
    assert versions["skl2onnx"].count(".") == 2
    assert int(versions["ai.onnx-opset"]) >= 9


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        (HEADER + _row(SETOSA, "setosa"), ["--target", "label"], "has no column 'label'"),
        (HEADER + _row(SETOSA, "rose"), ["--target", "species"], "target 'rose' is not a class"),
        (HEADER + "5.1,x,1.4,0.2,setosa\n", ["--target", "species"], "line 2: 'x' is not a num"),
        (HEADER + "5.1,3.5,1.4,setosa\n", ["--target", "species"], "line 2 has 4 columns"),
        (HEADER + "5.1,1e39,1.4,0.2,setosa\n", ["--target", "species"], "line 2: value must"),
        (HEADER, ["--target", "species"], "has no data rows"),
        ("a,b,species\n1,2,setosa\n", ["--target", "species"], "has 2 feature columns"),
        (HEADER + _row(SETOSA, "setosa"), [], "--accuracy-csv FILE and --target COLUMN go"),
    ],
)
def test_bad_heldout_data_is_one_line(
    tmp_path: Path,
    capsys: Capture,
    model_path: Path,
    label_path: Path,
    text: str,
    extra: list[str],
    message: str,
) -> None:
    path = _csv(tmp_path, text)
    err = _card(capsys, model_path, label_path, "--accuracy-csv", str(path), *extra, code=1)
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_target_without_file(capsys: Capture, model_path: Path, label_path: Path) -> None:
    err = _card(capsys, model_path, label_path, "--target", "species", code=1)
    assert "go together" in err


def test_a_regressor_has_no_accuracy(tmp_path: Path, capsys: Capture) -> None:
    files = linear_regressor(tmp_path)
    path = _csv(tmp_path, "a,b,c,y\n1,2,3,c0\n")
    extra = ["--accuracy-csv", str(path), "--target", "y"]
    err = _card(capsys, files.model, None, *extra, code=1)
    assert "error: --accuracy-csv needs a model with class names" in err
    assert "this model is a regressor" in err


def test_a_regressor_card_without_labels(tmp_path: Path, capsys: Capture) -> None:
    """クラスの無いモデルのカードは --labels なしで作れる。"""
    card = _card(capsys, linear_regressor(tmp_path).model, None)
    assert card["kind"] == "regressor"
    assert card["classes"] is None
    assert "skl2onnx" in card["library_versions"]


def test_class_index_prefers_names_then_graph_codes() -> None:
    """コード 3・7・10 のモデル：「7」はコード（列 1）であって列の番号ではない。"""
    index = class_index(["cat", "dog", "owl"], ("3", "7", "10"))
    assert index == {"3": 0, "7": 1, "10": 2, "cat": 0, "dog": 1, "owl": 2}
    assert class_index(["a", "b"], None) == {"0": 0, "1": 1, "a": 0, "b": 1}
