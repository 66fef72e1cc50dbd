"""benchmarks/batch_dask.py の道具：生成するデータの形と、行ごとの一致の判定（違えば偽）。"""

from __future__ import annotations

from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from benchmarks.batch_dask import FEATURES, same_rows, write_dataset  # noqa: E402


def _parts_from(data_files: list[Path], single: Path, parts: Path, row_group: int) -> None:
    """単一プロセスの出力を行グループの大きさで部品に切る（Dask の部品と同じ並び）。"""
    parts.mkdir()
    number = 0
    for path in data_files:
        table = pq.read_table(single / path.name)
        for start in range(0, table.num_rows, row_group):
            pq.write_table(table.slice(start, row_group), parts / f"part-{number:05d}.parquet")
            number += 1


def test_the_dataset_has_the_requested_rows_files_and_groups(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "in", rows=2_500, files=3, row_group=400)
    assert len(data.files) == 3
    tables = [pq.read_table(p) for p in data.files]
    assert sum(t.num_rows for t in tables) == 2_500
    assert tables[0].column_names == ["id", *FEATURES]
    ids = pa.concat_tables(tables).column("id").to_pylist()
    assert ids == list(range(2_500))
    assert data.groups == sum(pq.ParquetFile(p).num_row_groups for p in data.files) == 9


def test_same_rows_accepts_equal_parts_and_rejects_a_changed_value(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "in", rows=1_000, files=2, row_group=200)
    single = tmp_path / "single"
    single.mkdir()
    for path in data.files:  # 推論の代わりに入力そのものを「出力」にする：比較の道具だけを見る
        pq.write_table(pq.read_table(path), single / path.name)
    _parts_from(data.files, single, tmp_path / "parts", 200)
    assert same_rows(data, single, tmp_path / "parts")
    changed = pq.read_table(tmp_path / "parts" / "part-00003.parquet")
    values = changed.column("id").to_pylist()
    values[5] += 1
    changed = changed.set_column(0, "id", pa.array(values))
    pq.write_table(changed, tmp_path / "parts" / "part-00003.parquet")
    assert not same_rows(data, single, tmp_path / "parts")
    (tmp_path / "parts" / "part-00003.parquet").unlink()
    assert not same_rows(data, single, tmp_path / "parts")  # 部品が欠けた
