"""predict --engine dask と batch.dask.score：テストが起こした本物のスケジューラーとワーカーで。

答えは単一プロセスの predict と行ごとに同じ（Parquet と CSV、動物園の各種類のモデル）。
不正な行で止まる・飛ばす、ワーカーが途中で落ちても結果は欠けず重ならないことも確かめる。
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("distributed")

from model_in_image.cli import main  # noqa: E402
from support.dask_cluster import DaskCluster, dask_cluster  # noqa: E402
from support.zoo import load_case  # noqa: E402

Capture = pytest.CaptureFixture[str]
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
LOW, HIGH = (4.3, 2.0, 1.0, 0.1), (7.9, 4.4, 6.9, 2.5)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """スケジューラー 1 つとワーカー 2 つ（このモジュールのテストが共有する）。"""
    with dask_cluster(tmp_path_factory.mktemp("dask")) as running:
        yield running


def iris_table(rows: int, seed: int, prefix: str) -> Any:
    rng = np.random.default_rng(seed)
    values = rng.uniform(LOW, HIGH, (rows, 4)).round(1)
    ids = [f"{prefix}-{i}" for i in range(rows)]
    return pa.table({"id": ids, **{n: values[:, j] for j, n in enumerate(FEATURES)}})


def write_parquet_folder(folder: Path, files: int = 2, rows: int = 2_500) -> Path:
    """Parquet のファイル files 個（行グループ 1,000 行：1 ファイル 3 パーティション）。"""
    folder.mkdir()
    for f in range(files):
        pq.write_table(iris_table(rows, f, f"f{f}"), folder / f"f{f}.parquet", row_group_size=1_000)
    return folder


def single(paths: list[Path], tmp_path: Path, *flags: str) -> Any:
    """単一プロセスの predict（Parquet の出力）をファイルの順につないだ表。"""
    tables = []
    for i, path in enumerate(paths):
        target = tmp_path / f"single-{i}.parquet"
        assert main(["predict", str(path), "-o", str(target), "-q", *flags]) == 0
        tables.append(pq.read_table(target))
    return pa.concat_tables(tables)


def parts(folder: Path) -> Any:
    """--engine dask の部品を名前（パーティション）の順につないだ表。"""
    files = sorted(folder.glob("part-*.parquet"))
    assert files, f"no parts in {folder}"
    return pa.concat_tables([pq.read_table(path) for path in files])


def dask_predict(argv: list[str], cluster: DaskCluster, capsys: Capture, code: int = 0) -> str:
    """main(["predict", ..., "--engine", "dask", "--scheduler", ...]) の標準エラーの最後の行。"""
    engine = ["--engine", "dask", "--scheduler", cluster.address]
    assert main(["predict", *argv, *engine]) == code
    lines = capsys.readouterr().err.splitlines()
    return lines[-1] if lines else ""


def test_parquet_folder_matches_the_single_process_cli(
    tmp_path: Path, cluster: DaskCluster, capsys: Capture
) -> None:
    source = write_parquet_folder(tmp_path / "in")
    out = tmp_path / "out"
    summary = dask_predict([str(source), "-o", str(out), "--keep-columns", "id"], cluster, capsys)
    assert summary.startswith("predict: 5,000 rows, 0 invalid, ")
    assert summary.endswith(f"-> {out} (6 parts, dask)")
    want = single(sorted(source.glob("*.parquet")), tmp_path, "--keep-columns", "id")
    assert parts(out).equals(want)
    assert not (out / "errors").exists()


def test_csv_glob_matches_the_single_process_cli(
    tmp_path: Path, cluster: DaskCluster, capsys: Capture
) -> None:
    """CSV はファイルごとのパーティション。入力の列は既定では残さない。"""
    paths = []
    for f in range(3):
        table = iris_table(700, 10 + f, f"c{f}").select(FEATURES[::-1])  # 逆の順の見出し
        path = tmp_path / f"rows-{f}.csv"
        path.write_text(table.to_pandas().to_csv(index=False), encoding="utf-8")
        paths.append(path)
    out = tmp_path / "out"
    dask_predict([str(tmp_path / "rows-*.csv"), "-o", str(out), "-q"], cluster, capsys)
    assert parts(out).equals(single(paths, tmp_path))
    assert parts(out).column_names == [
        "label",
        "proba_setosa",
        "proba_versicolor",
        "proba_virginica",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "sklearn_svc_zipmap",
        "sklearn_gbr",
        "sklearn_kmeans",
        "torch_mlp_logits",
        "sklearn_int64_counts",
        "sklearn_column_transformer",
        "sklearn_tfidf_text",
    ],
)
def test_each_model_kind_matches_the_single_process_cli(
    tmp_path: Path,
    cluster: DaskCluster,
    capsys: Capture,
    cli_env: pytest.MonkeyPatch,
    name: str,
) -> None:
    cli_env.delenv("LABEL_FILEPATH")  # 動物園のモデルはグラフのクラス名
    case = load_case(name)
    rows = case.rows * 50
    if len(case.inputs) > 1:
        columns = {spec["name"]: [row[spec["name"]] for row in rows] for spec in case.inputs}
    else:
        cells = [row if isinstance(row, list) else [row] for row in rows]
        columns = {f"x{j}": [row[j] for row in cells] for j in range(len(cells[0]))}
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table(columns), source, row_group_size=100)
    flags = ["--model", str(case.model)] + ([] if len(case.inputs) > 1 else ["--columns=position"])
    out = tmp_path / "out"
    dask_predict([str(source), "-o", str(out), "-q", *flags], cluster, capsys)
    assert len(list(out.glob("part-*.parquet"))) == 3
    assert parts(out).equals(single([source], tmp_path, *flags))


@pytest.fixture
def one_bad_partition(tmp_path: Path) -> Path:
    """2 ファイル目（f1.parquet）の 1,502 行目（2 つ目の行グループ）だけが NaN の入力。"""
    source = write_parquet_folder(tmp_path / "in")
    table = pq.read_table(source / "f1.parquet")
    column = table.column(FEATURES[2]).to_numpy().copy()
    column[1_501] = np.nan
    table = table.set_column(3, FEATURES[2], pa.array(column))
    pq.write_table(table, source / "f1.parquet", row_group_size=1_000)
    return source


def test_an_invalid_row_stops_with_file_row_and_column(
    tmp_path: Path, cluster: DaskCluster, capsys: Capture, one_bad_partition: Path
) -> None:
    out = tmp_path / "out"
    argv = [str(one_bad_partition), "-o", str(out), "--ignore-columns", "id"]
    last = dask_predict(argv, cluster, capsys, code=1)
    assert last == (
        f"error: {one_bad_partition / 'f1.parquet'} row 1502, column 4 'petal length (cm)': "
        "value must be a finite number within the float32 range"
    )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # 一時フォルダーも残らない


def test_skip_invalid_writes_the_error_dataset(
    tmp_path: Path, cluster: DaskCluster, capsys: Capture, one_bad_partition: Path
) -> None:
    out = tmp_path / "out"
    argv = [str(one_bad_partition), "-o", str(out), "--skip-invalid", "--keep-columns", "id"]
    summary = dask_predict(argv, cluster, capsys)
    assert summary.startswith("predict: 4,999 rows, 1 invalid, ")
    assert summary.endswith(f"(invalid rows: {out / 'errors'})")
    (errors,) = (out / "errors").iterdir()
    assert errors.name == "part-00004.jsonl"  # f1 の 2 つ目の行グループ
    (entry,) = [json.loads(line) for line in errors.read_text().splitlines()]
    assert (entry["file"], entry["row"], entry["name"]) == (
        str(one_bad_partition / "f1.parquet"),
        1_502,
        "petal length (cm)",
    )
    want = single(
        sorted(one_bad_partition.glob("*.parquet")),
        tmp_path,
        "--skip-invalid",
        "--keep-columns",
        "id",
    )
    assert parts(out).equals(want)
    assert "f1-1501" not in parts(out).column("id").to_pylist()


def test_python_api_returns_a_dask_dataframe(
    tmp_path: Path, cluster: DaskCluster, model_path: Path
) -> None:
    import dask.dataframe as dd
    from distributed import Client

    from model_in_image.batch import BatchError
    from model_in_image.batch.dask import score

    source = write_parquet_folder(tmp_path / "in")
    with Client(cluster.address):
        ddf = dd.read_parquet(str(source))
        scored = score(ddf, model=model_path, keep_columns=["id"])
        assert list(scored.columns) == [
            "id",
            "label",
            "proba_setosa",
            "proba_versicolor",
            "proba_virginica",
        ]
        got = scored.compute()
        want = single(sorted(source.glob("*.parquet")), tmp_path, "--keep-columns", "id")
        assert (
            got.sort_values("id")
            .reset_index(drop=True)
            .equals(want.to_pandas().sort_values("id").reset_index(drop=True))
        )
        bad = ddf.assign(**{FEATURES[0]: ddf[FEATURES[0]].where(ddf["id"] != "f1-7", -1e39)})
        with pytest.raises(BatchError, match=r"partition \d+ row 8, column 2 'sepal length"):
            score(bad, model=model_path, ignore_columns=["id"]).compute()
        errors = tmp_path / "errors"
        kept = score(bad, model_path, keep_columns=["id"], skip_invalid=True, errors=errors)
        kept = kept.compute()
        assert len(kept) == 4_999
        (entry,) = [json.loads(x) for p in errors.iterdir() for x in p.read_text().splitlines()]
        assert entry["name"] == FEATURES[0]


def test_local_cluster_without_a_scheduler(tmp_path: Path, capsys: Capture) -> None:
    """--scheduler が無ければ 127.0.0.1 にワーカー --workers 個のクラスターを起こす。"""
    source = write_parquet_folder(tmp_path / "in", files=1)
    out = tmp_path / "out"
    argv = ["predict", str(source), "-o", str(out), "--engine", "dask", "--workers", "2"]
    assert main([*argv, "--ignore-columns", "id"]) == 0
    assert "(3 parts, dask)" in capsys.readouterr().err.splitlines()[-1]
    assert parts(out).equals(single([source / "f0.parquet"], tmp_path, "--ignore-columns=id"))


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_run_leaves_a_complete_unduplicated_result(
    tmp_path: Path, model_path: Path, label_path: Path
) -> None:
    """タスクの途中でワーカーを殺す：Dask がそのパーティションを残りのワーカーでやり直す。"""
    import os
    import subprocess
    import sys
    import time

    source = tmp_path / "big.parquet"
    pq.write_table(iris_table(1_600_000, 42, "k"), source, row_group_size=100_000)
    out = tmp_path / "out"
    with dask_cluster(tmp_path / "cluster") as running:
        command = [
            str(Path(sys.executable).parent / "model-in-image"),
            "predict", str(source), "-o", str(out), "--keep-columns", "id", "-q",
            "--model", str(model_path), "--labels", str(label_path),
            "--engine", "dask", "--scheduler", running.address,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "LABEL_"))}
        run = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            staging = tmp_path / f".out.partial-{run.pid}"
            deadline = time.monotonic() + 180
            while len(list(staging.glob("part-*.parquet"))) < 2:
                assert run.poll() is None, run.stderr.read() if run.stderr else ""
                assert time.monotonic() < deadline, "no parts written in time"
                time.sleep(0.05)
            done_at_kill = len(list(staging.glob("part-*.parquet")))
            running.kill_worker(0)
            assert run.poll() is None  # 殺したのは推論の途中
            _, err = run.communicate(timeout=240)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            if run.stderr is not None:
                run.stderr.close()  # 失敗しても管を閉じる（次のテストで ResourceWarning にしない）
    assert run.returncode == 0, err
    assert done_at_kill < 16
    result = parts(out)
    assert len(list(out.glob("part-*.parquet"))) == 16
    assert result.num_rows == 1_600_000
    assert len(set(result.column("id").to_pylist())) == 1_600_000
    assert result.equals(single([source], tmp_path, "--keep-columns", "id"))


def test_progress_bar_goes_to_stderr(
    tmp_path: Path, cluster: DaskCluster, capfd: pytest.CaptureFixture[str]
) -> None:
    """Dask の進み具合のバーは標準エラーへ（標準出力は空のまま）。"""
    from model_in_image.batch import BatchOptions, ProgressMode
    from model_in_image.batch.dask import run_engine
    from model_in_image.settings import Settings

    source = write_parquet_folder(tmp_path / "in", files=1)
    options = BatchOptions(
        input=str(source),
        output=str(tmp_path / "out"),
        keep_columns=("id",),
        progress=ProgressMode.BAR,
    )
    result = run_engine(Settings(), options, scheduler=cluster.address)
    captured = capfd.readouterr()
    assert (result.rows, result.parts) == (2_500, 3)
    assert "100% Completed" in captured.err
    assert captured.out == ""
