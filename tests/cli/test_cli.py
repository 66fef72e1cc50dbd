"""コマンドライン：train・info・predict（JSON・CSV・標準入力）・serve の失敗時の終了コード。"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from model_in_image.cli import main
from model_in_image.modelcard import ModelCard
from model_in_image.runtime import sha256_of
from support.samples import SETOSA

VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.3, 2.9, 5.6, 1.8]
CSV_ROWS = "5.1,3.5,1.4,0.2\n5.9,3.0,4.2,1.5\n6.3,2.9,5.6,1.8\n"
CSV_HEADER = "sepal_length,sepal_width,petal_length,petal_width\n"
SPECIES = ["setosa", "versicolor", "virginica"]

Capture = pytest.CaptureFixture[str]


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ \[")


def _json_lines(out: str) -> list[Any]:
    """標準出力の JSON 行（ログ行の混入は test_stdout_is_machine_readable が別に確かめる）。"""
    return [
        json.loads(line) for line in out.splitlines() if line.strip() and not LOG_LINE.match(line)
    ]


def _exit_code(argv: list[str]) -> int | str | None:
    """main() の戻り値、または SystemExit のコード。"""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


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
    assert info["signature"]["input_width"] == 4
    assert info["signature"]["num_classes"] == 3
    assert info["signature"]["output_kind"] == "tensor"
    assert info["model_card"]["sha256"] == sha256_of(model_path)
    assert info["metadata"]["labels"] == SPECIES


def _json_text(out: str) -> list[str]:
    return [line for line in out.splitlines() if not LOG_LINE.match(line)]


@pytest.mark.parametrize("argv", [["info"], ["predict", "--labels"]], ids=["info", "predict"])
def test_stdout_is_machine_readable(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, argv: list[str]
) -> None:
    """標準出力は JSON だけ（ログは標準エラーへ）。`| jq` やファイルへの保存が壊れない。"""
    monkeypatch.setattr("sys.stdin", io.StringIO(CSV_ROWS))
    assert main(argv) == 0
    out = capsys.readouterr().out
    if argv[0] == "info":
        assert json.loads(out)["signature"]["input_width"] == 4
    else:
        assert [json.loads(line) for line in out.splitlines()] == SPECIES


def _predict(argv: list[str], capsys: Capture) -> list[Any]:
    assert main(["predict", *argv]) == 0
    return _json_lines(capsys.readouterr().out)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"data": [SETOSA, VERSICOLOR, VIRGINICA]}),
        json.dumps([SETOSA, VERSICOLOR, VIRGINICA]),
    ],
    ids=["object", "list"],
)
def test_predict_json_file(tmp_path: Path, capsys: Capture, text: str) -> None:
    path = _write(tmp_path, "rows.json", text)
    assert _predict([path, "--labels"], capsys) == SPECIES


def test_predict_probabilities(tmp_path: Path, capsys: Capture) -> None:
    path = _write(tmp_path, "rows.json", json.dumps({"data": [SETOSA, VIRGINICA]}))
    rows = _predict([path], capsys)
    assert len(rows) == 2
    for row in rows:
        assert len(row) == 3
        assert sum(row) == pytest.approx(1.0, abs=1e-5)
    assert rows[0][0] > 0.5
    assert rows[1][2] > 0.5


@pytest.mark.parametrize("header", [CSV_HEADER, ""], ids=["header", "no-header"])
def test_predict_csv_file(tmp_path: Path, capsys: Capture, header: str) -> None:
    path = _write(tmp_path, "rows.csv", header + CSV_ROWS + "\n")
    assert _predict([path, "--labels"], capsys) == SPECIES


def test_predict_forced_format(tmp_path: Path, capsys: Capture) -> None:
    path = _write(tmp_path, "rows.txt", CSV_ROWS)
    assert _predict([path, "--format", "csv", "--labels"], capsys) == SPECIES


@pytest.mark.parametrize(
    "text", [json.dumps({"data": [VIRGINICA]}), "6.3,2.9,5.6,1.8\n"], ids=["json", "csv"]
)
def test_predict_stdin(monkeypatch: pytest.MonkeyPatch, capsys: Capture, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert _predict(["--labels"], capsys) == ["virginica"]
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert _predict(["-"], capsys)[0][2] > 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"data": [[5.1, 3.5', "not valid JSON"),
        ('{"rows": [[5.1, 3.5, 1.4, 0.2]]}', "JSON input must be"),
        ('{"data": [5.1, 3.5, 1.4, 0.2]}', "JSON input must be"),
        ('{"data": [[5.1, 3.5, 1.4]]}', "expects 4"),
        ('{"data": [[5.1, true, 1.4, 0.2]]}', "every value must be a number"),
        ('{"data": [[5.1, "x", 1.4, 0.2]]}', "every value must be a number"),
        ('{"data": []}', "at least one row"),
        ('{"data": [[1e39, 3.5, 1.4, 0.2]]}', "float32 range"),
        ("5.1,3.5,abc,0.2\n", "not a number"),
        ("5.1,3.5,1.4\n", "expects 4"),
        ("nan,3.5,1.4,0.2\n", "float32 range"),
    ],
    ids=[
        "malformed",
        "no-data",
        "flat",
        "narrow",
        "boolean",
        "string",
        "empty",
        "overflow",
        "csv-text",
        "csv-narrow",
        "csv-nan",
    ],
)
def test_predict_bad_input(tmp_path: Path, capsys: Capture, text: str, message: str) -> None:
    path = _write(tmp_path, "bad.txt", text)
    assert main(["predict", path]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1].startswith("error: ")
    assert message in captured.err
    assert _json_lines(captured.out) == []


@pytest.mark.parametrize(
    ("name", "content"),
    [("missing.json", None), ("latin1.csv", b"5.1,3.5,1.4,0.2\n\xff\n")],
    ids=["missing", "not-utf8"],
)
def test_unreadable_input_file(
    tmp_path: Path, capsys: Capture, name: str, content: bytes | None
) -> None:
    """読めない入力ファイルもトレースバックではなく終了コード 1 とメッセージ。"""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert _exit_code(["predict", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ")
    assert name in err


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


def test_serve_with_workers_and_a_missing_model_fails(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture
) -> None:
    cli_env.setenv("MODEL_FILEPATH", str(tmp_path / "missing.onnx"))
    assert main(["serve", "--workers", "2", "--port", "8766"]) == 3  # 1 ワーカーと同じ
    assert "model file not found" in capsys.readouterr().out  # serve のログは標準出力


def test_version(capsys: Capture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip()


def test_unknown_command_is_a_usage_error(capsys: Capture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2
