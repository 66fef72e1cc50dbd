"""Dask のバッチ推論のベンチマーク：単一プロセスの `predict` と `--engine dask`（ワーカー 2 つ）。

    uv run --frozen python -m benchmarks.batch_dask                  # 1,000 万行、8 ファイル
    uv run --frozen python -m benchmarks.batch_dask --rows 400000    # 短縮版

同じ実行の中で同じ Parquet（id と Iris の 4 列、行グループ --row-group 行）を
1. 単一プロセスの `model-in-image predict`（ファイルごとに 1 回、--keep-columns id）、
2. `--engine dask --scheduler`：このスクリプトが 127.0.0.1 に起こした `dask scheduler` と
   `dask worker` 2 つ（ナニー無し・1 スレッド。ピーク RSS はワーカーごとに wait4 で測る）、
3. `--engine dask --workers 2`：predict が自分で起こす LocalCluster（クラスターの起動を含む）
に推論させ、壁時計（起動を含む）の行/秒・ピーク RSS・単一プロセスに対する比を表にし、
出力がファイルごとに行ごと一致すること（Arrow の Table.equals）を確かめる。
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.batch import HEADER, HIGH, LABELS, LOW, MODEL

FEATURES = HEADER.strip().split(",")
DASK = Path(sys.executable).parent / "dask"
START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Dataset:
    """生成した入力：ファイルと行数・行グループの数。"""

    files: list[Path]
    rows: int
    groups: int


def write_dataset(folder: Path, rows: int, files: int, row_group: int, seed: int = 0) -> Dataset:
    """Iris 風の Parquet を files 個書く（id は 0 からの通し番号、小数 1 桁）。"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // files)
    paths, groups, start = [], 0, 0
    for i in range(files):
        count = min(per_file, rows - start)
        values = rng.uniform(LOW, HIGH, (count, 4)).round(1)
        ids = np.arange(start, start + count, dtype=np.int64)
        table = pa.table({"id": ids, **{n: values[:, j] for j, n in enumerate(FEATURES)}})
        path = folder / f"rows-{i:02d}.parquet"
        pq.write_table(table, path, row_group_size=row_group)
        groups += pq.ParquetFile(path).num_row_groups
        paths.append(path)
        start += count
    return Dataset(paths, rows, groups)


def vm_hwm(pid: int) -> int:
    """プロセスの今の VmHWM（exec 後のピーク RSS、バイト。無ければ 0）。

    wait4 の ru_maxrss は fork した親（データを作ったこのプロセス）の RSS を exec の前から
    引き継ぐので使わない。
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """pid の子孫のプロセス（/proc の children をたどる）。"""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as handle:
                    children = [int(c) for c in handle.read().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


@dataclass(frozen=True, slots=True)
class Measured:
    """1 回の計測：壁時計の秒、プロセス本体のピーク RSS、子孫のプロセスごとのピーク RSS。"""

    seconds: float
    peak_rss: int
    children: list[int]


def measure(command: Sequence[str]) -> Measured:
    """子プロセスを実行し、秒と、本体と子孫（LocalCluster のワーカー）の VmHWM を 0.2 秒ごとに。"""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # パイプは詰まりうる：ファイルに
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        peaks: dict[int, int] = {}
        while process.poll() is None:
            for pid in [process.pid, *descendants(process.pid)]:
                peaks[pid] = max(peaks.get(pid, 0), vm_hwm(pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{command[2:5]} failed ({process.returncode}):\n{stderr}")
    own = peaks.pop(process.pid, 0)
    return Measured(seconds, own, sorted(peaks.values(), reverse=True))


def predict(*args: str) -> list[str]:
    """`model-in-image predict` のコマンド（同梱の Iris、id を残す、集計行なし）。"""
    return [
        sys.executable,
        "-m",
        "model_in_image.cli",
        "predict",
        *args,
        "--model",
        str(MODEL),
        "--labels",
        str(LABELS),
        "--keep-columns",
        "id",
        "--quiet",
    ]


def single_process(data: Dataset, out: Path) -> Measured:
    """ファイルごとに単一プロセスの predict（秒は合計、RSS は最大）。"""
    out.mkdir()
    runs = [measure(predict(str(p), "-o", str(out / p.name))) for p in data.files]
    return Measured(sum(r.seconds for r in runs), max(r.peak_rss for r in runs), [])


def _stop(process: subprocess.Popen[bytes]) -> int:
    """ピーク RSS（VmHWM、バイト）を読んでから PID で止める（SIGTERM、10 秒で SIGKILL）。"""
    peak = vm_hwm(process.pid)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return peak


@contextmanager
def cluster(directory: Path, workers: int, rss: list[int]) -> Iterator[str]:
    """127.0.0.1 にスケジューラーとワーカーを起こす。止めたワーカーのピーク RSS を rss に足す。"""
    from distributed import Client

    info = directory / "scheduler.json"
    log = (directory / "dask.log").open("ab")
    common: dict[str, object] = {"stdout": log, "stderr": subprocess.STDOUT, "cwd": directory}
    scheduler_args = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    scheduler = subprocess.Popen(
        [str(DASK), *scheduler_args, "--scheduler-file", str(info)],
        **common,  # type: ignore[call-overload]
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not info.exists() or not info.read_text():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dask scheduler did not start; see {directory / 'dask.log'}")
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        worker_args = ["--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard"]
        for _ in range(workers):
            started.append(
                subprocess.Popen(
                    [str(DASK), "worker", address, *worker_args],
                    **common,  # type: ignore[call-overload]
                )
            )
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=START_TIMEOUT)
        yield address
    finally:
        rss.extend(_stop(worker) for worker in started)
        _stop(scheduler)
        log.close()


def same_rows(data: Dataset, single: Path, parts: Path) -> bool:
    """単一プロセスの出力（ファイルごと）と Dask の部品（パーティションの順）が行ごとに同じか。"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(parts.glob("part-*.parquet"))
    if len(files) != data.groups:
        return False
    index = 0
    for path in data.files:
        groups = pq.ParquetFile(path).num_row_groups
        scored = pa.concat_tables([pq.read_table(p) for p in files[index : index + groups]])
        index += groups
        if not scored.equals(pq.read_table(single / path.name)):
            return False
    return True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_dask", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="行数（既定 1,000 万）")
    parser.add_argument("--files", type=int, default=8, help="Parquet のファイルの数（既定 8）")
    parser.add_argument(
        "--row-group", type=int, default=250_000, help="行グループの行数＝パーティション（25 万）"
    )
    parser.add_argument("--workers", type=int, default=2, help="Dask のワーカーの数（既定 2）")
    parser.add_argument(
        "--chunk-rows", type=int, default=None, help="predict の --chunk-rows（既定はそのまま）"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """データを作り、3 つの方式を順に測って表を表示する。"""
    args = parse_args(argv)
    chunk = ["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []
    with tempfile.TemporaryDirectory(prefix="mii-dask-bench-") as directory:
        work = Path(directory)
        started = time.perf_counter()
        data = write_dataset(work / "in", args.rows, args.files, args.row_group)
        print(
            f"# generated {data.rows:,} rows in {len(data.files)} Parquet files, "
            f"{data.groups} row groups, in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        runs: dict[str, Measured] = {}
        workers_rss: list[int] = []
        runs["single-process predict"] = single_process(data, work / "single")
        with cluster(work, args.workers, workers_rss) as address:
            target = work / "dask-scheduler"
            engine = ["--engine", "dask", "--scheduler", address, *chunk]
            runs["--engine dask --scheduler"] = measure(
                predict(str(work / "in"), "-o", str(target), *engine)
            )
        local = work / "dask-local"
        runs[f"--engine dask --workers {args.workers}"] = measure(
            predict(
                str(work / "in"),
                "-o",
                str(local),
                "--engine",
                "dask",
                "--workers",
                str(args.workers),
                *chunk,
            )
        )
        same = same_rows(data, work / "single", target) and same_rows(data, work / "single", local)
        report(data, runs, workers_rss, same=same)
        return 0 if same else 1


def report(data: Dataset, runs: dict[str, Measured], workers_rss: list[int], *, same: bool) -> None:
    """行/秒・ピーク RSS・単一プロセスに対する比を表にする。"""
    load = os.getloadavg()
    print(
        f"# {data.rows:,} rows, {len(data.files)} Parquet files, {data.groups} partitions, "
        f"Parquet → Parquet, wall clock including start-up; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    baseline = data.rows / runs["single-process predict"].seconds
    print(f"{'':30} {'seconds':>8} {'rows/s':>12} {'peak RSS':>10} {'× single':>9}")
    for name, run in runs.items():
        rate = data.rows / run.seconds
        peak = run.peak_rss / 2**20
        ratio = rate / baseline
        print(f"{name:30} {run.seconds:>8.1f} {rate:>12,.0f} {peak:>8.0f}MB {ratio:>9.2f}")
    print(f"peak RSS per worker (--scheduler): {megabytes(workers_rss)}")
    for name, run in runs.items():
        if run.children:  # LocalCluster：ナニーとワーカー（と multiprocessing の補助）
            print(f"peak RSS of child processes ({name}): {megabytes(run.children)}")
    print(f"rows identical: {same}")


def megabytes(values: Sequence[int]) -> str:
    return ", ".join(f"{v / 2**20:.0f}MB" for v in values)


if __name__ == "__main__":
    sys.exit(main())
