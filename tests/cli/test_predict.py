"""model-in-image predict：形式（CSV・JSON Lines・シードの JSON・Parquet）・順序・不正な行。

期待値は同じモデルのデータプレーン（HTTP と同じ経路）で 1000 行ずつ計算した確率と比べる。
出力の確率は float32 の最短表記なので、float32 に戻せば完全に一致する。
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_in_image.batch import BatchOptions, ProgressMode, load_batch_dataplane, run_batch
from model_in_image.cli import main
from model_in_image.dataplane import DataPlane
from model_in_image.settings import Settings
from support.fruit import FRUIT_LABELS, CardModel
from support.samples import SETOSA, VERSICOLOR, VIRGINICA

Capture = pytest.CaptureFixture[str]

ROWS = [SETOSA, VERSICOLOR, VIRGINICA]
SPECIES = ["setosa", "versicolor", "virginica"]
COLUMNS = ["label", "proba_setosa", "proba_versicolor", "proba_virginica"]
# 同梱の Iris のモデルカードの feature_names（見出しの列は名前でモデルの入力に対応させる）
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
CSV_HEADER = ",".join(FEATURES) + "\n"
HTTP_LIMIT = 1000
SUMMARY = re.compile(
    r"^predict: (?P<rows>[\d,]+) rows, (?P<invalid>[\d,]+) invalid, [\d.]+ s, [\d,]+ rows/s -> "
)


def csv_text(rows: list[list[float]]) -> str:
    return "".join(",".join(repr(v) for v in row) + "\n" for row in rows)


def jsonl_text(rows: list[list[float]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def iris_rows(count: int, seed: int = 0) -> list[list[float]]:
    """Iris の範囲の行（小数 1 桁）。"""
    rng = np.random.default_rng(seed)
    block = rng.uniform((4.3, 2.0, 1.0, 0.1), (7.9, 4.4, 6.9, 2.5), (count, 4)).round(1)
    return block.tolist()  # type: ignore[no-any-return]


def expected(
    dataplane: DataPlane, rows: list[list[float]]
) -> tuple[list[str], np.ndarray[Any, Any]]:
    """HTTP と同じデータプレーンで 1000 行ずつ推論したラベルと確率。"""
    labels: list[str] = []
    parts = []
    for start in range(0, len(rows), HTTP_LIMIT):
        probabilities = dataplane.predict(
            dataplane.validate(rows[start : start + HTTP_LIMIT], loc=())
        )
        labels += dataplane.labels_of(probabilities)
        parts.append(probabilities)
    return labels, np.concatenate(parts)


def parse_csv(text: str) -> tuple[list[str], list[str], np.ndarray[Any, Any]]:
    """出力 CSV を（見出し, ラベル, float32 の確率）にする。"""
    assert text.endswith("\n")
    header, *body = list(csv.reader(io.StringIO(text)))
    probabilities = np.array([[float(v) for v in row[1:]] for row in body], dtype=np.float32)
    return header, [row[0] for row in body], probabilities


def assert_scored(text: str, dataplane: DataPlane, rows: list[list[float]]) -> None:
    """出力 CSV が rows を入力の順にすべて推論したものであること。"""
    header, labels, probabilities = parse_csv(text)
    want_labels, want = expected(dataplane, rows)
    assert header == COLUMNS
    assert labels == want_labels
    np.testing.assert_array_equal(probabilities, want.astype(np.float32))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def stdin_bytes(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """標準入力をバイト列にする（predict は sys.stdin.buffer から読む）。"""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def predict(argv: list[str], capsys: Capture, *, code: int = 0) -> tuple[str, str]:
    """main(["predict", ...]) を実行して（標準出力, 標準エラー）を返す。"""
    assert main(["predict", *argv]) == code
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.mark.parametrize("header", [CSV_HEADER, ""], ids=["header", "no-header"])
def test_csv_file_with_or_without_header(
    tmp_path: Path, capsys: Capture, dataplane: DataPlane, header: str
) -> None:
    path = write(tmp_path, "rows.csv", header + csv_text(ROWS) + "\n")
    out, err = predict([str(path)], capsys)
    assert_scored(out, dataplane, ROWS)
    assert parse_csv(out)[1] == SPECIES
    summary = SUMMARY.match(err.splitlines()[-1])
    assert summary is not None, err
    assert (summary["rows"], summary["invalid"]) == ("3", "0")


def test_jsonl_in_and_out(tmp_path: Path, capsys: Capture, dataplane: DataPlane) -> None:
    source = write(tmp_path, "rows.jsonl", jsonl_text(ROWS))
    target = tmp_path / "scored.jsonl"
    out, _ = predict([str(source), "-o", str(target)], capsys)
    assert out == ""
    text = target.read_text(encoding="utf-8")
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert [list(r) for r in records] == [COLUMNS] * 3
    _, want = expected(dataplane, ROWS)
    assert [r["label"] for r in records] == SPECIES
    got = np.array([[r[c] for c in COLUMNS[1:]] for r in records], dtype=np.float32)
    np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize(
    "text",
    [json.dumps({"data": ROWS}), json.dumps(ROWS), json.dumps({"data": ROWS}, indent=2)],
    ids=["object", "list", "indented"],
)
def test_seed_json_body(tmp_path: Path, capsys: Capture, dataplane: DataPlane, text: str) -> None:
    out, _ = predict([str(write(tmp_path, "body.json", text))], capsys)
    assert_scored(out, dataplane, ROWS)


@pytest.mark.parametrize(
    "text",
    [CSV_HEADER + csv_text(ROWS), csv_text(ROWS), jsonl_text(ROWS), json.dumps({"data": ROWS})],
    ids=["csv-header", "csv", "jsonl", "seed-json"],
)
def test_stdin_to_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, dataplane: DataPlane, text: str
) -> None:
    """形式は内容から決まる（標準入力には拡張子が無い）。"""
    stdin_bytes(monkeypatch, text.encode())
    out, _ = predict(["-"], capsys)
    assert_scored(out, dataplane, ROWS)


def test_forced_formats(tmp_path: Path, capsys: Capture, dataplane: DataPlane) -> None:
    source = write(tmp_path, "rows.txt", jsonl_text(ROWS))
    target = tmp_path / "scored.txt"
    predict([str(source), "--format", "jsonl", "-o", str(target), "--output-format", "csv"], capsys)
    assert_scored(target.read_text(encoding="utf-8"), dataplane, ROWS)


def test_more_rows_than_the_http_limit_in_order(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture, dataplane: DataPlane
) -> None:
    """HTTP の上限（MAX_REQUEST_ROWS）はオフラインの推論には効かない：25,000 行をすべて順に。"""
    cli_env.setenv("MAX_REQUEST_ROWS", str(HTTP_LIMIT))
    rows = iris_rows(25_000)
    source = write(tmp_path, "big.csv", CSV_HEADER + csv_text(rows))
    target = tmp_path / "big.out.csv"
    _, err = predict([str(source), "-o", str(target)], capsys)
    assert_scored(target.read_text(encoding="utf-8"), dataplane, rows)
    summary = SUMMARY.match(err.splitlines()[-1])
    assert summary is not None
    assert summary["rows"] == "25,000"


def test_chunk_size_does_not_change_the_output(tmp_path: Path, capsys: Capture) -> None:
    rows = iris_rows(1_003, seed=1)
    source = write(tmp_path, "rows.csv", csv_text(rows))
    outputs = []
    for chunk in ("7", "1000", "1"):
        target = tmp_path / f"out-{chunk}.csv"
        predict([str(source), "-o", str(target), "--chunk-rows", chunk], capsys)
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_an_invalid_row_stops_with_its_line_number(
    tmp_path: Path, capsys: Capture, dataplane: DataPlane
) -> None:
    """既定では不正な行で止まる：行番号（見出し行を含む）・列・理由。ファイルの出力は残らない。"""
    rows = iris_rows(2_500, seed=2)
    lines = csv_text(rows).splitlines(keepends=True)
    lines[1_233] = "5.0,3.1,abc,0.2\n"  # 見出し行があるのでファイルの 1,235 行目
    source = write(tmp_path, "rows.csv", CSV_HEADER + "".join(lines))
    target = tmp_path / "out.csv"
    out, err = predict([str(source), "-o", str(target), "--chunk-rows", "500"], capsys, code=1)
    assert err.splitlines()[-1] == (
        f"error: {source} line 1235, column 3 'petal length (cm)': 'abc' is not a number"
    )
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [source]  # 一時ファイルも残らない
    assert out == ""


def test_stdout_gets_the_rows_before_the_invalid_one(
    tmp_path: Path, capsys: Capture, dataplane: DataPlane
) -> None:
    rows = iris_rows(1_500, seed=3)
    lines = csv_text(rows).splitlines(keepends=True)
    lines[1_200] = "5.0,3.1,1.4\n"
    source = write(tmp_path, "rows.csv", "".join(lines))
    out, err = predict([str(source), "--chunk-rows", "1000"], capsys, code=1)
    assert err.splitlines()[-1] == (
        f"error: {source} line 1201: row has 3 values; the model expects 4"
    )
    assert_scored(out, dataplane, rows[:1_200])


def test_skip_invalid_writes_the_error_file(
    tmp_path: Path, capsys: Capture, dataplane: DataPlane
) -> None:
    rows = iris_rows(3_000, seed=4)
    lines = csv_text(rows).splitlines(keepends=True)
    bad = {
        10: ("5.0,3.1,abc,0.2\n", 3, "'abc' is not a number"),
        1_500: ("5.0,3.1,1.4\n", None, "row has 3 values; the header has 4 columns"),
        1_501: ("1e39,3.1,1.4,0.2\n", 1, "value must be a finite number within the float32 range"),
        2_999: ("nan,3.1,1.4,0.2\n", 1, "value must be a finite number within the float32 range"),
    }
    for index, (line, _, _) in bad.items():
        lines[index] = line
    source = write(tmp_path, "rows.csv", CSV_HEADER + "".join(lines))
    target = tmp_path / "out.csv"
    _, err = predict([str(source), "-o", str(target), "--skip-invalid"], capsys)
    good = [row for i, row in enumerate(rows) if i not in bad]
    assert_scored(target.read_text(encoding="utf-8"), dataplane, good)
    errors = [json.loads(line) for line in Path(f"{target}.errors.jsonl").read_text().splitlines()]
    want = []
    for index, (line, column, reason) in sorted(bad.items()):
        entry: dict[str, Any] = {"file": str(source), "line": index + 2}
        if column is not None:
            entry |= {"column": column, "name": FEATURES[column - 1]}
        want.append(entry | {"error": reason, "input": line.strip()})
    assert errors == want
    summary = SUMMARY.match(err.splitlines()[-1])
    assert summary is not None
    assert (summary["rows"], summary["invalid"]) == ("2,996", "4")
    assert err.splitlines()[-1].endswith(f"(invalid rows: {target}.errors.jsonl)")


def test_skip_invalid_error_file_option_and_all_rows_invalid(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--errors で場所を選べる。全行が不正でも見出し行だけの出力で成功する。"""
    monkeypatch.chdir(tmp_path)
    stdin_bytes(monkeypatch, b'["x", 1, 2, 3]\n[1, 2]\n')
    out, _ = predict(["--skip-invalid", "--errors", "bad.jsonl"], capsys)
    assert out == ",".join(COLUMNS) + "\n"
    errors = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert errors == [
        {
            "file": "stdin",
            "line": 1,
            "column": 1,
            "error": "Expected `float`, got `str`",
            "input": '["x", 1, 2, 3]',
        },
        {
            "file": "stdin",
            "line": 2,
            "error": "row has 2 values; the model expects 4",
            "input": "[1, 2]",
        },
    ]


def test_skip_invalid_default_error_file_for_stdout(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stdin_bytes(monkeypatch, b"5.1,3.5,1.4,0.2\n1,2\n")
    predict(["--skip-invalid"], capsys)
    assert json.loads((tmp_path / "predict-errors.jsonl").read_text())["line"] == 2


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", '{"data": [[5.1, 3.5', "input is not valid JSON after 0 rows: parse error"),
        ("bad.json", '{"rows": [[5.1, 3.5, 1.4, 0.2]]}', "no rows in input"),
        ("bad.json", '{"data": [5.1, 3.5, 1.4, 0.2]}', "row 1: must be a list of numbers"),
        ("bad.json", '{"data": [[5.1, 3.5, 1.4]]}', "row 1: row has 3 values; the model expects 4"),
        ("bad.json", '{"data": [[5.1, true, 1.4, 0.2]]}', "row 1, column 2: every value must be"),
        ("bad.json", '{"data": [[5.1, "x", 1.4, 0.2]]}', "row 1, column 2: every value must be"),
        ("bad.json", '{"data": []}', "no rows in input"),
        (
            "bad.json",
            '{"data": [[1e39, 3.5, 1.4, 0.2]]}',
            "row 1, column 1: value must be a finite",
        ),
        ("bad.jsonl", "[5.1, 3.5, 1.4, 0.2]\n[5.1, 3.5", "line 2: not valid JSON"),
        (
            "bad.jsonl",
            "[5.1, 3.5, 1.4, 0.2]\n[5.1, false, 1, 1]",
            "line 2, column 2: Expected `float`",
        ),
        (
            "bad.jsonl",
            '{"data": [[5.1, 3.5, 1.4, 0.2]]}\n',
            "line 1: must be a JSON array of numbers",
        ),
        ("bad.csv", "5.1,3.5,abc,0.2\n", "line 1, column 3: 'abc' is not a number"),
        ("bad.csv", "5.1,3.5,1.4\n", "line 1: row has 3 values; the model expects 4"),
        ("bad.csv", "5.1,3.5,1.4,0.2,\n", "line 1: row has 5 values; the model expects 4"),
        ("bad.csv", "5.1,3.5,1.4,0.2\nnan,3.5,1.4,0.2\n", "line 2, column 1: value must be"),
        ("bad.csv", "5.1,3.5,1_4,0.2\n", "line 1, column 3: '1_4' is not a number"),
        ("bad.csv", "", "no rows in input"),
        ("bad.csv", CSV_HEADER + "\n\n", "no rows in input"),
    ],
)
def test_bad_input(tmp_path: Path, capsys: Capture, name: str, text: str, message: str) -> None:
    path = write(tmp_path, name, text)
    out, err = predict([str(path)], capsys, code=1)
    assert err.splitlines()[-1].startswith("error: ")
    assert message in err.splitlines()[-1]
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"5.1,3.5,1.4,0.2\n\xff,1,1,1\n", "line 2: not UTF-8 at byte 0"),
        (b"5.1,3.5,1.4,0.2\n" + b"1," * (1 << 20) + b"\n", "line 2: line is longer than 1048576"),
    ],
    ids=["not-utf8", "long-line"],
)
def test_unreadable_lines(tmp_path: Path, capsys: Capture, content: bytes, message: str) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(content)
    _, err = predict([str(path)], capsys, code=1)
    assert err.splitlines()[-1] == f"error: {message}" or message in err.splitlines()[-1]


def test_long_line_is_skipped_and_reading_goes_on(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"1," * (1 << 20) + b"\n5.1,3.5,1.4,0.2\n")
    target = tmp_path / "out.csv"
    predict([str(path), "-o", str(target), "--skip-invalid"], capsys)
    assert parse_csv(target.read_text())[1] == ["setosa"]
    (entry,) = [json.loads(x) for x in Path(f"{target}.errors.jsonl").read_text().splitlines()]
    assert entry["line"] == 1
    assert entry["input"] == "<line longer than 1048576 bytes>"


def test_bom_and_crlf(tmp_path: Path, capsys: Capture, dataplane: DataPlane) -> None:
    """Excel が書く CSV（UTF-8 の BOM、CRLF）。"""
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (CSV_HEADER + csv_text(ROWS)).replace("\n", "\r\n").encode())
    out, _ = predict([str(path)], capsys)
    assert_scored(out, dataplane, ROWS)


def test_unreadable_input_file(tmp_path: Path, capsys: Capture) -> None:
    _, err = predict([str(tmp_path / "missing.csv")], capsys, code=1)
    assert err.splitlines()[-1].startswith("error: cannot read input ")
    assert "missing.csv" in err


def test_unwritable_output(tmp_path: Path, capsys: Capture) -> None:
    source = write(tmp_path, "rows.csv", csv_text(ROWS))
    _, err = predict([str(source), "-o", str(tmp_path / "no" / "out.csv")], capsys, code=1)
    assert err.splitlines()[-1].startswith("error: cannot write output ")


def test_output_to_a_device_is_written_in_place(tmp_path: Path, capsys: Capture) -> None:
    """/dev/null のような特殊ファイルは一時ファイルで置き換えず、そのまま書く。"""
    source = write(tmp_path, "rows.csv", csv_text(ROWS))
    predict([str(source), "-o", os.devnull], capsys)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


@pytest.mark.parametrize("value", ["0", "1000001", "ten"])
def test_chunk_rows_is_checked(capsys: Capture, value: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", "--chunk-rows", value])
    assert info.value.code == 2
    assert "--chunk-rows" in capsys.readouterr().err


def test_quiet_prints_no_summary(tmp_path: Path, capsys: Capture) -> None:
    source = write(tmp_path, "rows.csv", csv_text(ROWS))
    _, err = predict([str(source), "-q"], capsys)
    assert not any(SUMMARY.match(line) for line in err.splitlines())


def test_progress_bar_on_stderr(
    tmp_path: Path, capsys: Capture, settings: Settings, dataplane: DataPlane
) -> None:
    """進み具合は端末のときだけ出す（main が isatty で決める）。出すときは標準エラーへ。"""
    source = write(tmp_path, "rows.csv", csv_text(iris_rows(2_000)))
    batch = load_batch_dataplane(settings, 500)
    result = run_batch(
        batch, BatchOptions(input=str(source), chunk_rows=500, progress=ProgressMode.BAR)
    )
    captured = capsys.readouterr()
    assert result.rows == 2_000
    assert "predict: 100%" in captured.err
    assert "2,000 rows" in captured.err
    assert_scored(captured.out, dataplane, iris_rows(2_000))


def test_a_second_model_by_flags(tmp_path: Path, capsys: Capture, fruit_model: CardModel) -> None:
    """--model/--labels/--card で別のモデル：列はラベルファイルの名前（CSV の引用符つき）。"""
    source = write(tmp_path, "fruit.csv", "x,y,z\n0.9,0.1,-0.5\n-1.0,0.2,1.5\n")  # カードの名前
    flags = ["--model", str(fruit_model.model), "--labels", str(fruit_model.labels)]
    out, _ = predict([str(source), *flags, "--card", str(fruit_model.card)], capsys)
    assert out.splitlines()[0] == 'label,"proba_small, round","proba_long ""banana"""'
    header, labels, probabilities = parse_csv(out)
    assert header == ["label", *(f"proba_{name}" for name in FRUIT_LABELS.values())]
    assert labels == [FRUIT_LABELS["1"], FRUIT_LABELS["0"]]  # 1 は x > z
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    target = tmp_path / "fruit.jsonl"
    predict([str(source), *flags, "--columns", "position", "-o", str(target)], capsys)
    first = json.loads(target.read_text().splitlines()[0])
    assert list(first) == header
    assert first["label"] == FRUIT_LABELS["1"]
    # カードが無ければ見出しの名前を確かめられない：位置で取るとは言われていないので断る
    _, err = predict([str(source), *flags], capsys, code=1)
    assert "the model names no features" in err.splitlines()[-1]


def test_parquet_in_and_out(tmp_path: Path, capsys: Capture, dataplane: DataPlane) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = iris_rows(2_345, seed=5)
    columns = np.array(rows).T
    table = pa.table({name: columns[i] for i, name in enumerate(FEATURES)})
    source = tmp_path / "rows.parquet"
    pq.write_table(table, source)
    target = tmp_path / "scored.parquet"
    _, err = predict([str(source), "-o", str(target), "--chunk-rows", "1000"], capsys)
    result = pq.read_table(target)
    assert result.column_names == COLUMNS
    want_labels, want = expected(dataplane, rows)
    assert result.column("label").to_pylist() == want_labels
    got = np.column_stack([result.column(c).to_numpy() for c in COLUMNS[1:]])
    np.testing.assert_array_equal(got, want)
    summary = SUMMARY.match(err.splitlines()[-1])
    assert summary is not None
    assert summary["rows"] == "2,345"


def test_parquet_nulls_are_invalid_rows(tmp_path: Path, capsys: Capture) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "rows.parquet"
    values = [[5.1, None], [3.5, 3.0], [1, 4], [0.2, 1.5]]
    pq.write_table(pa.table(dict(zip(FEATURES, values, strict=True))), source)
    _, err = predict([str(source)], capsys, code=1)
    assert err.splitlines()[-1] == (
        f"error: {source} row 2, column 1 'sepal length (cm)': "
        "value must be a finite number within the float32 range"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-", "--format", "parquet"], "Parquet input must be a file"),
        (["rows.csv", "--output-format", "parquet"], "Parquet output must be a file"),
        (["strings.parquet"], "the input's header does not match the model's features"),
        (["broken.parquet"], "cannot read Parquet input"),
    ],
)
def test_parquet_errors(
    tmp_path: Path,
    capsys: Capture,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    write(tmp_path, "rows.csv", csv_text(ROWS))
    write(tmp_path, "broken.parquet", "not parquet")
    pq.write_table(pa.table({"name": ["a"]}), tmp_path / "strings.parquet")
    _, err = predict(argv, capsys, code=1)
    assert message in err.splitlines()[-1]
