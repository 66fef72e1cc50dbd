"""動物園のモデルを CLI の一括推論（model-in-image predict）で：実数 1 入力の分類器。

ほかの種類（回帰・int64・文字列・複数入力）は今は名前を挙げて断る（issue 21 の 7 はまだ）。
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from model_in_image.cli import main
from support.zoo import case_names, load_case

FLOAT_CLASSIFIERS = [
    name
    for name in case_names()
    if load_case(name).kind == "classifier"
    and [i["element"] for i in load_case(name).inputs] == ["float"]
]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("name", FLOAT_CLASSIFIERS)
def test_cli_predict_matches_the_framework(tmp_path: Path, name: str) -> None:
    """CSV（見出しなし）の一括推論は、フレームワークのラベルと確率を書く。"""
    case = load_case(name)
    source, target = tmp_path / "rows.csv", tmp_path / "out.csv"
    source.write_text("".join(",".join(map(str, row)) + "\n" for row in case.rows))
    assert main(["predict", "--model", str(case.model), str(source), "-o", str(target), "-q"]) == 0
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert case.labels is not None
    assert [row["label"] for row in rows] == case.labels.values
    columns = [f"proba_{label}" for label in case.classes or ()]
    got = np.array([[float(row[c]) for c in columns] for row in rows])
    rtol, atol = case.tolerance
    np.testing.assert_allclose(got, case.prediction.values, rtol=rtol, atol=atol)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("name", ["sklearn_gbr", "sklearn_int64_counts", "torch_mlp_logits"])
def test_cli_predict_refuses_other_kinds_by_name(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """まだ一括推論できない種類は、種類と入出力を挙げて断る（黙って誤った値を書かない）。"""
    case = load_case(name)
    source = tmp_path / "rows.csv"
    source.write_text("".join(",".join(map(str, row)) + "\n" for row in case.rows))
    assert main(["predict", "--model", str(case.model), str(source), "-q"]) != 0
    assert f"kind={case.kind}" in capsys.readouterr().err
