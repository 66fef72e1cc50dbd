"""バッチ推論のベンチマーク：`model-in-image predict` と最小の numpy + ONNX Runtime のループ。

    uv run --frozen python -m benchmarks.batch                 # 100 万行の CSV、各 3 回
    uv run --frozen python -m benchmarks.batch --rows 200000 --repeats 1

同じ実行の中で同じ CSV（見出し行つき）を両方に交互に読ませ、同じ形の出力（label と
proba_<ラベル名>）を書かせ、壁時計の行/秒とピーク RSS（os.wait4 の ru_maxrss）を並べる。
最小のループは検証・エラー処理・進み具合を持たない「これより速くはしにくい」目安。
両者の出力のラベルが一致することも確かめる。
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "iris_svc.onnx"
LABELS = ROOT / "models" / "label.json"
CHUNK_ROWS = 10_000
# Iris の各特徴量の範囲（一様乱数で行を作る）
LOW = (4.3, 2.0, 1.0, 0.1)
HIGH = (7.9, 4.4, 6.9, 2.5)
# 同梱のモデルカードの feature_names（predict は見出しの名前で列を対応させる）
HEADER = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n"


@dataclass(frozen=True, slots=True)
class Run:
    """1 回の計測：壁時計の秒とピーク RSS（バイト）。"""

    seconds: float
    peak_rss: int


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """見出し行つきの Iris 風 CSV を書く（小数 1 桁、10 万行ずつ）。"""
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for start in range(0, rows, 100_000):
            block = rng.uniform(LOW, HIGH, (min(100_000, rows - start), 4)).round(1)
            out.writelines(f"{a},{b},{c},{d}\n" for a, b, c, d in block.tolist())


def minimal_loop(source: Path, target: Path, model: Path, labels: Path) -> None:
    """最小のループ：np.loadtxt でチャンクを読み、ONNX Runtime で推論し、% 書式で書く。"""
    import itertools

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output = next(o.name for o in session.get_outputs() if o.type == "tensor(float)")
    names = json.loads(labels.read_text(encoding="utf-8"))
    classes = np.array([names[str(i)] for i in range(len(names))], dtype=object)
    line = "%s" + ",%.9g" * len(classes) + "\n"  # float32 を往復できる桁数
    with source.open(encoding="utf-8") as rows, target.open("w", encoding="utf-8") as out:
        next(rows)  # 見出し行
        out.write(",".join(["label", *(f"proba_{c}" for c in classes)]) + "\n")
        while lines := list(itertools.islice(rows, CHUNK_ROWS)):
            features = np.loadtxt(lines, delimiter=",", dtype=np.float32, ndmin=2)
            (probabilities,) = session.run([output], {input_name: features})
            labels_of = classes[probabilities.argmax(axis=1)].tolist()
            out.write(
                "".join(
                    [
                        line % (label, *p)
                        for label, p in zip(labels_of, probabilities.tolist(), strict=True)
                    ]
                )
            )


def measure(command: Sequence[str]) -> Run:
    """子プロセスを実行し、壁時計の秒と、その子のピーク RSS（wait4）を返す。"""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{command[2:4]} failed ({process.returncode}):\n{stderr}")
    return Run(seconds, usage.ru_maxrss * 1024)


def labels_column(path: Path) -> list[str]:
    """出力 CSV の label 列。"""
    with path.open(encoding="utf-8") as handle:
        return [row[0] for row in csv.reader(handle)][1:]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV の行数（既定 100 万）")
    parser.add_argument("--repeats", type=int, default=3, help="各方式の回数（交互に実行）")
    parser.add_argument("--input", type=Path, help="既存の CSV を使う（見出し行つき、4 列）")
    parser.add_argument("--minimal-loop", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CSV を作り、両方式を交互に測って表を表示する。"""
    args = parse_args(argv)
    if args.minimal_loop:
        minimal_loop(*args.minimal_loop, MODEL, LABELS)
        return 0
    with tempfile.TemporaryDirectory(prefix="mii-batch-bench-") as directory:
        work = Path(directory)
        source = args.input or work / "rows.csv"
        if args.input is None:
            write_csv(source, args.rows)
        rows = sum(1 for _ in source.open(encoding="utf-8")) - 1
        commands = {
            "model-in-image predict": [
                sys.executable,
                "-m",
                "model_in_image.cli",
                "predict",
                str(source),
                "-o",
                str(work / "predict.csv"),
                "--model",
                str(MODEL),
                "--labels",
                str(LABELS),
                "--quiet",
            ],
            "minimal numpy + ORT loop": [
                sys.executable,
                "-m",
                "benchmarks.batch",
                "--minimal-loop",
                str(source),
                str(work / "minimal.csv"),
            ],
        }
        runs: dict[str, list[Run]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                runs[name].append(measure(command))
        same = labels_column(work / "predict.csv") == labels_column(work / "minimal.csv")
        report(rows, runs, same=same)
        return 0 if same else 1


def report(rows: int, runs: dict[str, list[Run]], *, same: bool) -> None:
    """行/秒（中央値と最良）、ピーク RSS、最小のループに対する比を表にする。"""
    load = os.getloadavg()
    print(
        f"# {rows:,} rows, CSV → CSV, wall clock including start-up; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    best = {name: rows / min(r.seconds for r in rs) for name, rs in runs.items()}
    median = {name: rows / statistics.median(r.seconds for r in rs) for name, rs in runs.items()}
    baseline = median["minimal numpy + ORT loop"]
    print(f"{'':28} {'rows/s (median)':>16} {'rows/s (best)':>14} {'peak RSS':>10} {'× loop':>7}")
    for name, rs in runs.items():
        peak = max(r.peak_rss for r in rs) / 2**20
        ratio = median[name] / baseline
        print(f"{name:28} {median[name]:>16,.0f} {best[name]:>14,.0f} {peak:>8.0f}MB {ratio:>7.2f}")
    print(f"labels identical: {same}")


if __name__ == "__main__":
    sys.exit(main())
