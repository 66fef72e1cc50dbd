"""動物園のモデルを CLI の一括推論（model-in-image predict）で：どの種類も onnxruntime と同じ値。

列は種類ごと（分類器とネットは label とクラスごとの値、回帰は prediction、テンソルのモデルは
出力ごと）。複数入力・文字列・int64 の入力、見出しの名前による列の対応（順の入れ替え・知らない
名前・欠けた名前）、--keep-columns、見出しの無いファイル、不正な値の場所も確かめる。
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_in_image.cli import main
from support.paths import REPO_ROOT
from support.zoo import ORT_ATOL, ORT_RTOL, ZooCase, case_names, load_case

Capture = pytest.CaptureFixture[str]
REPEAT = 3  # 見本の行を繰り返し、--chunk-rows 4 でチャンクの境目をまたがせる


def table(case: ZooCase, rows: list[Any]) -> tuple[list[str], list[list[Any]]]:
    """行を表にする：複数入力は入力名の列、1 入力は値の列（名前は x0, x1, ...）。"""
    if len(case.inputs) > 1:
        names = [spec["name"] for spec in case.inputs]
        return names, [[row[name] for name in names] for row in rows]
    cells = [row if isinstance(row, list) else [row] for row in rows]
    return [f"x{j}" for j in range(len(cells[0]))], cells


def write_csv(path: Path, header: list[str] | None, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def predict(argv: list[str], capsys: Capture, code: int = 0) -> str:
    """main(["predict", ...]) を実行し、標準エラーの最後の行を返す。"""
    assert main(["predict", *argv]) == code
    lines = capsys.readouterr().err.splitlines()
    return lines[-1] if lines else ""


def expected_columns(case: ZooCase) -> tuple[list[str], list[Any], np.ndarray[Any, Any]]:
    """種類ごとの（列名, 最初の列の値, 数値の列の値）。値は onnxruntime で直に動かしたもの。"""
    outputs = [spec["name"] for spec in case.outputs]
    if case.kind == "regressor":
        return ["prediction"], [], case.run(outputs[0]).reshape(len(case.rows), -1)
    if case.kind == "tensor":  # KMeans：label と scores
        scores = case.run("scores")
        names = ["label", *(f"scores_{j}" for j in range(scores.shape[1]))]
        return names, case.run("label").tolist(), scores
    assert case.labels is not None
    assert case.classes is not None
    primary = outputs[-1] if case.kind == "classifier" else outputs[0]
    prefix = "logits_" if case.kind == "logits" else "proba_"
    names = ["label", *(prefix + name for name in case.classes)]
    return names, case.labels.values, case.run(primary)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("name", case_names())
def test_every_model_kind_matches_onnxruntime(
    tmp_path: Path, capsys: Capture, name: str, fmt: str
) -> None:
    """1 入力は位置（見出しなし・--columns position）、複数入力は入力名の見出しで。"""
    case = load_case(name)
    header, rows = table(case, case.rows * REPEAT)
    several = len(case.inputs) > 1
    flags = [] if several else ["--no-header" if fmt == "csv" else "--columns=position"]
    if fmt == "csv":
        source = write_csv(tmp_path / "rows.csv", header if several else None, rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = tmp_path / "rows.parquet"
        columns = list(zip(*rows, strict=True))
        pq.write_table(pa.table({n: list(c) for n, c in zip(header, columns, strict=True)}), source)
    target = tmp_path / "out.csv"
    argv = [str(source), "--model", str(case.model), "-o", str(target), "--chunk-rows", "4"]
    predict([*argv, *flags, "-q"], capsys)
    got_header, got = read_csv(target)
    names, first, values = expected_columns(case)
    assert got_header == names
    assert len(got) == len(case.rows) * REPEAT
    numbers = np.array([[float(v) for v in row[len(names) - values.shape[1] :]] for row in got])
    want = np.tile(values, (REPEAT, 1))
    np.testing.assert_allclose(numbers, want, rtol=ORT_RTOL, atol=ORT_ATOL)
    if first:
        assert [row[0] for row in got] == [str(v) for v in first] * REPEAT


@pytest.fixture
def iris_csv() -> tuple[list[str], list[list[float]]]:
    """同梱の Iris のカードの特徴量名と、3 品種の行。"""
    card = json.loads((REPO_ROOT / "models" / "model_card.json").read_text(encoding="utf-8"))
    rows = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]]
    return list(card["feature_names"]), rows


@pytest.mark.usefixtures("clean_env")
def test_reversed_columns_are_scored_by_name_and_ids_kept(
    tmp_path: Path, capsys: Capture, iris_csv: tuple[list[str], list[list[float]]]
) -> None:
    """見出しの順が逆でも名前で対応させ、--keep-columns の列を推論の列の前に残す。"""
    names, rows = iris_csv
    forward = write_csv(tmp_path / "forward.csv", names, rows)
    reversed_rows = [[f"id-{i}", *row[::-1]] for i, row in enumerate(rows)]
    backward = write_csv(tmp_path / "backward.csv", ["id", *names[::-1]], reversed_rows)
    predict([str(forward), "-o", str(tmp_path / "f.csv"), "-q"], capsys)
    predict([str(backward), "-o", str(tmp_path / "b.csv"), "--keep-columns", "id", "-q"], capsys)
    f_header, f_rows = read_csv(tmp_path / "f.csv")
    b_header, b_rows = read_csv(tmp_path / "b.csv")
    assert b_header == ["id", *f_header]
    assert b_rows == [[f"id-{i}", *row] for i, row in enumerate(f_rows)]
    assert [row[0] for row in f_rows] == ["setosa", "versicolor", "virginica"]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            ["a", "b", "c", "d"],
            "missing ['sepal length (cm)', 'sepal width (cm)', 'petal length (cm)', "
            "'petal width (cm)'], unknown ['a', 'b', 'c', 'd']",
        ),
        (["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "d"], "unknown ['d']"),
        (["sepal length (cm)", "sepal width (cm)", "petal length (cm)"], "missing ['petal"),
    ],
    ids=["all-unknown", "one-unknown", "one-missing"],
)
def test_a_header_naming_other_features_is_refused(
    tmp_path: Path, capsys: Capture, header: list[str], message: str
) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2][: len(header)]]
    source = write_csv(tmp_path / "rows.csv", header, rows)
    last = predict([str(source)], capsys, code=1)
    assert last.startswith("error: the input's header does not match the model's features: ")
    assert message in last
    assert "the model expects ['sepal length (cm)'" in last


@pytest.mark.usefixtures("clean_env")
def test_feature_names_from_the_graph_metadata(tmp_path: Path, capsys: Capture) -> None:
    """カードの無いモデルでも、グラフのメタデータ feature_names があれば名前で対応させる。"""
    import onnx

    case = load_case("sklearn_logreg_tensor")
    graph = onnx.load(case.model)
    names = ["sl", "sw", "pl", "pw"]
    graph.metadata_props.add(key="feature_names", value=json.dumps(names))
    model = tmp_path / "named.onnx"
    onnx.save(graph, model)
    source = write_csv(tmp_path / "rows.csv", names[::-1], [row[::-1] for row in case.rows])
    target = tmp_path / "out.csv"
    predict([str(source), "--model", str(model), "-o", str(target), "-q"], capsys)
    _, got = read_csv(target)
    np.testing.assert_allclose(
        np.array([[float(v) for v in row[1:]] for row in got]),
        case.run("probabilities"),
        rtol=ORT_RTOL,
        atol=ORT_ATOL,
    )


@pytest.mark.usefixtures("clean_env")
def test_several_inputs_by_name_in_any_order(tmp_path: Path, capsys: Capture) -> None:
    """複数入力（実数 2 つと文字列 1 つ）：列の順によらず入力名で、id は残す（JSON Lines へ）。"""
    case = load_case("sklearn_column_transformer")
    header, rows = table(case, case.rows)
    order = [2, 0, 1]  # plan, age, monthly_spend
    shuffled = [[f"c{i}", *(row[j] for j in order)] for i, row in enumerate(rows)]
    source = write_csv(tmp_path / "rows.csv", ["id", *(header[j] for j in order)], shuffled)
    target = tmp_path / "out.jsonl"
    predict(
        [str(source), "--model", str(case.model), "--keep-columns=id", "-o", str(target)], capsys
    )
    got = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in got] == [f"c{i}" for i in range(len(rows))]
    assert case.labels is not None
    assert [row["label"] for row in got] == case.labels.values
    values = np.array([[row["proba_0"], row["proba_1"]] for row in got])
    np.testing.assert_allclose(values, case.run("output_probability"), rtol=ORT_RTOL, atol=ORT_ATOL)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("name", "header", "message"),
    [
        ("sklearn_column_transformer", ["age", "monthly_spend"], "missing ['plan']"),
        (
            "sklearn_column_transformer",
            ["age", "monthly_spend", "plan", "colour"],
            "unknown ['colour']",
        ),
        ("sklearn_int64_counts", ["a", "b", "c", "d", "e", "f"], "the model names no features"),
    ],
)
def test_several_inputs_header_errors(
    tmp_path: Path, capsys: Capture, name: str, header: list[str], message: str
) -> None:
    case = load_case(name)
    source = write_csv(tmp_path / "rows.csv", header, [["1"] * len(header)])
    last = predict([str(source), "--model", str(case.model)], capsys, code=1)
    assert message in last


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("name", "header", "cells", "where"),
    [
        (
            "sklearn_column_transformer",
            ["age", "monthly_spend", "plan"],
            ["abc", "1.5", "basic"],
            "column 1 'age': 'abc' is not a number",
        ),
        (
            "sklearn_int64_counts",
            None,
            ["1", "2", "3.5", "4", "5", "6"],
            "column 3: '3.5' is not an integer (int64)",
        ),
        (
            "sklearn_int64_counts",
            None,
            ["1", "2", "3", "4", "5", str(2**63)],
            f"column 6: input 'counts': value {2**63} is outside the int64 range",
        ),
    ],
    ids=["string-into-float", "float-into-int64", "int64-overflow"],
)
def test_a_bad_value_names_file_line_and_column(
    tmp_path: Path,
    capsys: Capture,
    name: str,
    header: list[str] | None,
    cells: list[str],
    where: str,
) -> None:
    """止まるときはファイル・行・列・理由を、--skip-invalid ならエラーファイルに書いて続ける。"""
    case = load_case(name)
    good = table(case, case.rows[:1])[1][0]
    source = write_csv(tmp_path / "rows.csv", header, [good, cells, good])
    line = 3 if header else 2
    flags = ["--model", str(case.model)] + ([] if header else ["--no-header"])
    last = predict([str(source), *flags], capsys, code=1)
    assert last.startswith(f"error: {source} line {line}, {where}")
    target = tmp_path / "out.csv"
    predict([str(source), *flags, "--skip-invalid", "-o", str(target)], capsys)
    assert len(read_csv(target)[1]) == 2
    (entry,) = [json.loads(x) for x in Path(f"{target}.errors.jsonl").read_text().splitlines()]
    assert (entry["file"], entry["line"], entry["input"]) == (str(source), line, ",".join(cells))


@pytest.mark.usefixtures("clean_env")
def test_text_rows_need_no_header_flag_when_the_first_row_is_text(
    tmp_path: Path, capsys: Capture
) -> None:
    """文字列 1 入力：見出し text なら名前で。見出しの無いファイルは --no-header と言われる。"""
    case = load_case("sklearn_tfidf_text")
    rows = table(case, case.rows)[1]
    named = write_csv(tmp_path / "named.csv", ["text"], rows)
    target = tmp_path / "out.csv"
    predict([str(named), "--model", str(case.model), "-o", str(target), "-q"], capsys)
    assert case.labels is not None
    assert [row[0] for row in read_csv(target)[1]] == case.labels.values
    bare = write_csv(tmp_path / "bare.csv", None, rows)
    last = predict([str(bare), "--model", str(case.model)], capsys, code=1)
    assert f"unknown [{rows[0][0]!r}]" in last
