"""コマンドライン：train・info・オプションと環境変数・serve の失敗（predict は test_predict）。"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path

import pytest

from model_in_image.cli import _parser, main
from model_in_image.modelcard import ModelCard
from model_in_image.runtime import sha256_of
from support.fruit import FRUIT_LABELS, FRUIT_SAMPLE, CardModel
from support.paths import LABEL_FILE, MODEL_FILE

CSV_ROWS = "5.1,3.5,1.4,0.2\n5.9,3.0,4.2,1.5\n6.3,2.9,5.6,1.8\n"
SPECIES = ["setosa", "versicolor", "virginica"]

Capture = pytest.CaptureFixture[str]


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ \[")


def _exit_code(argv: list[str]) -> int | str | None:
    """main() の戻り値、または SystemExit のコード。"""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_train(tmp_path: Path, capsys: Capture) -> None:
    assert main(["train", "--output-dir", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    card = ModelCard.read(out / "model_card.json")
    assert card.sha256 == sha256_of(out / "iris_svc.onnx")
    assert json.loads((out / "label.json").read_text(encoding="utf-8"))["0"] == "setosa"
    printed = json.loads(capsys.readouterr().out)
    assert printed["sha256"] == card.sha256
    assert printed["heldout_accuracy"] == card.heldout_accuracy


def test_info(capsys: Capture, model_path: Path) -> None:
    assert main(["info"]) == 0
    info = json.loads("\n".join(_json_text(capsys.readouterr().out)))
    assert info["signature"]["inputs"][0]["shape"] == [-1, 4]
    assert info["signature"]["num_classes"] == 3
    assert info["signature"]["output_kind"] == "tensor"
    assert info["signature"]["kind"] == "classifier"
    assert info["model_card"]["sha256"] == sha256_of(model_path)
    assert info["metadata"]["labels"] == SPECIES


def _json_text(out: str) -> list[str]:
    return [line for line in out.splitlines() if not LOG_LINE.match(line)]


@pytest.mark.parametrize("argv", [["info"], ["predict"]], ids=["info", "predict"])
def test_stdout_is_machine_readable(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, argv: list[str]
) -> None:
    """標準出力は結果だけ（ログと集計は標準エラーへ）。`| jq` やファイルへの保存が壊れない。"""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(CSV_ROWS.encode())))
    assert main(argv) == 0
    out = capsys.readouterr().out
    if argv[0] == "info":
        assert json.loads(out)["signature"]["inputs"][0]["shape"] == [-1, 4]
    else:
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0] == ["label", *(f"proba_{name}" for name in SPECIES)]
        assert [row[0] for row in rows[1:]] == SPECIES


def test_info_for_a_model_given_by_flags(capsys: Capture, fruit_model: CardModel) -> None:
    argv = ["info", "--model", str(fruit_model.model), "--labels", str(fruit_model.labels)]
    assert main([*argv, "--card", str(fruit_model.card)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["signature"]["inputs"][0]["shape"] == [-1, 3]
    assert info["signature"]["output_kind"] == "zipmap"
    assert info["metadata"]["labels"] == list(FRUIT_LABELS.values())
    assert info["metadata"]["data_sample"] == FRUIT_SAMPLE
    assert info["model_card"]["name"] == "fruit"


def test_flags_win_over_environment(
    cli_env: pytest.MonkeyPatch, capsys: Capture, fruit_model: CardModel
) -> None:
    """環境変数（MODEL_FILEPATH・LABEL_FILEPATH）が別のモデルを指していてもオプションが優先。"""
    cli_env.setenv("MODEL_FILEPATH", str(fruit_model.model))
    cli_env.setenv("LABEL_FILEPATH", str(fruit_model.labels))
    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["signature"]["inputs"][0]["shape"] == [-1, 3]
    assert main(["info", "--model", str(MODEL_FILE), "--labels", str(LABEL_FILE)]) == 0
    assert json.loads(capsys.readouterr().out)["signature"]["inputs"][0]["shape"] == [-1, 4]


def test_every_option_has_help() -> None:
    """どのサブコマンドのどのオプションにも説明がある（--help で読める）。"""
    parser = _parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"serve", "train", "predict", "info", "card"}
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    serve = sub.choices["serve"].format_help()
    for flag in ("--model", "--labels", "--card", "--host", "--port", "--workers"):
        assert flag in serve
    for command in ("info", "predict"):
        assert "--model" in sub.choices[command].format_help()


@pytest.mark.parametrize("command", [["info"], ["predict", "-"], ["serve"]])
def test_invalid_settings_exit_2(
    cli_env: pytest.MonkeyPatch, capsys: Capture, command: list[str]
) -> None:
    cli_env.setenv("PORT", "0")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("invalid settings:")
    assert "port" in err


def test_serve_port_option_is_validated(capsys: Capture) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["info"], ["predict", "-"]])
def test_missing_model_exit_1(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture, command: list[str]
) -> None:
    cli_env.setenv("MODEL_FILEPATH", str(tmp_path / "missing.onnx"))
    assert main(command) == 1
    assert "model file not found" in capsys.readouterr().err


def test_serve_with_a_missing_model_fails(cli_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.setenv("MODEL_FILEPATH", str(tmp_path / "missing.onnx"))
    assert _exit_code(["serve", "--port", "8765"]) not in (0, None)


@pytest.mark.parametrize("by", ["env", "flag"])
def test_serve_with_workers_and_a_missing_model_fails(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture, by: str
) -> None:
    missing = str(tmp_path / "missing.onnx")
    flags = ["--model", missing] if by == "flag" else []
    if by == "env":
        cli_env.setenv("MODEL_FILEPATH", missing)
    assert main(["serve", "--workers", "2", "--port", "8766", *flags]) == 3  # 1 ワーカーと同じ
    assert f"model file not found: {missing}" in capsys.readouterr().out  # serve のログは標準出力


def test_version(capsys: Capture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip()


def test_unknown_command_is_a_usage_error(capsys: Capture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2
