"""model-in-image card：カードを書く・確かめる（ビルド引数）・拒否は理由の 1 行。"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_in_image.cli import main
from model_in_image.modelcard import ModelCard
from support.models import write_labels

Capture = pytest.CaptureFixture[str]


def _card(*args: str) -> int:
    return main(["card", *args])


def test_writes_a_card_next_to_the_model_by_default(
    model_path: Path, label_path: Path, tmp_path: Path, capsys: Capture
) -> None:
    model = tmp_path / "mine.onnx"
    model.write_bytes(model_path.read_bytes())
    assert _card("--model", str(model), "--labels", str(label_path)) == 0
    card = ModelCard.read(tmp_path / "model_card.json")
    assert card.name == "mine"
    assert card.model_file == "mine.onnx"
    err = capsys.readouterr().err
    assert f"wrote {tmp_path / 'model_card.json'}: mine (mine.onnx" in err
    assert "[N, 4] float32, 3 classes, tensor output" in err


def test_sample_reference_and_name(
    model_path: Path, label_path: Path, tmp_path: Path, capsys: Capture
) -> None:
    reference = tmp_path / "ref.csv"
    reference.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.3,2.9,5.6,1.8\n", encoding="utf-8")
    args = ["--model", str(model_path), "--labels", str(label_path), "--output", "-"]
    args += ["--name", "iris-v2", "--sample", "[[5.9, 3.0, 4.2, 1.5]]"]
    assert _card(*args, "--reference", str(reference)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "iris-v2"
    assert printed["sample_input"] == [[5.9, 3.0, 4.2, 1.5]]
    assert printed["feature_names"] == ["a", "b", "c", "d"]
    assert printed["reference"]["rows"] == 2


def test_refused_model_is_one_line(model_path: Path, tmp_path: Path, capsys: Capture) -> None:
    labels = write_labels(tmp_path / "labels.json", {"0": "a", "1": "b"})
    out = tmp_path / "card.json"
    assert _card("--model", str(model_path), "--labels", str(labels), "--output", str(out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("model refused: label file has 2 entries")
    assert not out.exists()


def test_existing_card_is_not_overwritten(
    model_path: Path, label_path: Path, tmp_path: Path, capsys: Capture
) -> None:
    out = tmp_path / "card.json"
    args = ["--model", str(model_path), "--labels", str(label_path), "--output", str(out)]
    assert _card(*args) == 0
    assert _card(*args) == 1
    assert "exists: pass --force" in capsys.readouterr().err
    assert _card(*args, "--force") == 0


def test_bad_sample_is_an_input_error(model_path: Path, label_path: Path, capsys: Capture) -> None:
    args = ["--model", str(model_path), "--labels", str(label_path), "--output", "-"]
    assert _card(*args, "--sample", "[[1, 2") == 1
    assert capsys.readouterr().err.startswith("error: --sample must be a JSON list of rows")


def test_check_prints_build_arguments(
    model_path: Path, label_path: Path, card_path: Path, capsys: Capture
) -> None:
    args = ["--model", str(model_path), "--labels", str(label_path), "--check", str(card_path)]
    assert _card(*args, "--expect", "MODEL_INPUT_WIDTH=4") == 0
    captured = capsys.readouterr()
    lines = dict(line.split("=", 1) for line in captured.out.splitlines())
    assert lines["MODEL_FILE"] == "iris_svc.onnx"
    assert lines["MODEL_INPUT_WIDTH"] == "4"
    assert json.loads(lines["MODEL_CLASSES"]) == ["setosa", "versicolor", "virginica"]
    assert captured.err.startswith("model accepted: iris_svc (iris_svc.onnx")


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("MODEL_INPUT_WIDTH=5", "model refused: build argument MODEL_INPUT_WIDTH=5"),
        ("MODEL_INPUT_WIDTH", "error: --expect takes KEY=VALUE"),
        ("=4", "error: --expect takes KEY=VALUE"),
    ],
)
def test_check_refusals(
    model_path: Path,
    label_path: Path,
    card_path: Path,
    capsys: Capture,
    expect: str,
    message: str,
) -> None:
    args = ["--model", str(model_path), "--labels", str(label_path), "--check", str(card_path)]
    assert _card(*args, "--expect", expect) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message)


def test_info_shows_no_sbom_outside_the_image(capsys: Capture) -> None:
    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["sbom"] is None
