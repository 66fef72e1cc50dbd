"""Ray Data・Spark の例のテストの道具：docs/model.md の例の取り出し、入力、単一プロセスとの比較。

答えは単一プロセスの `model-in-image predict`（同じ Parquet、--keep-columns id）と id の順で
行ごとに比べる（エンジンは行の順を保たない）。
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_in_image.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "model.md"
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
LOW, HIGH = (4.3, 2.0, 1.0, 0.1), (7.9, 4.4, 6.9, 2.5)
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
FILES, ROWS = 3, 2_000


def recipe(marker: str) -> str:
    """docs/model.md の Python の例のうち marker を含むもの（ちょうど 1 つ）。"""
    blocks = [b for b in BLOCK.findall(DOC.read_text(encoding="utf-8")) if marker in b]
    assert len(blocks) == 1, f"expected one python block with {marker!r} in {DOC}"
    return str(blocks[0])


def single_process(workdir: Path) -> Any:
    """単一プロセスの predict（ファイルごと）の出力をつないだ表。"""
    tables = []
    for path in sorted((workdir / "data").glob("*.parquet")):
        target = workdir / f"single-{path.stem}.parquet"
        models = workdir / "models"
        model = ["--model", str(models / "iris_svc.onnx"), "--labels", str(models / "label.json")]
        argv = ["predict", str(path), "-o", str(target), "-q", "--keep-columns", "id", *model]
        assert main(argv) == 0
        tables.append(pq.read_table(target))
    return pa.concat_tables(tables)


def by_id(table: Any) -> Any:
    """id の順に並べた表（エンジンの出力の順によらない比較のため）。"""
    return table.sort_by("id").combine_chunks()


def same_rows(got: Any, want: Any) -> None:
    """行数・列・値が id ごとに同じこと。"""
    assert got.num_rows == want.num_rows == FILES * ROWS
    assert got.column_names == want.column_names
    assert by_id(got).equals(by_id(want))


def prepare(folder: Path) -> Path:
    """例のとおりの作業フォルダー：models/（リポジトリの models へのリンク）と data/。"""
    (folder / "models").symlink_to(ROOT / "models")
    write_data(folder / "data")
    return folder


def write_data(folder: Path) -> None:
    """data/ に Iris 風の Parquet を FILES 個（id は通し番号、行グループ 500 行）。"""
    folder.mkdir()
    rng = np.random.default_rng(24)
    for f in range(FILES):
        values = rng.uniform(LOW, HIGH, (ROWS, 4)).round(1)
        ids = np.arange(f * ROWS, (f + 1) * ROWS, dtype=np.int64)
        table = pa.table({"id": ids, **{n: values[:, j] for j, n in enumerate(FEATURES)}})
        pq.write_table(table, folder / f"rows-{f}.parquet", row_group_size=500)
