"""numpy の ufunc が直後の ONNX Runtime の推論を遅くすることを、同じプロセス内で確かめる。

    uv run --frozen python -m benchmarks.numpy_penalty

各ケースを交互に 5 回測り、1 回あたりの µs（最小・中央値）を表示する。「py 検査 + 推論」が
「推論だけ」に近く、「numpy 検査 + 推論」が両者の和より大きければ、小さな入力で numpy を
避ける理由になる（src/model_in_image/dataplane.py の SMALL_INPUT_VALUES）。
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODEL = Path(__file__).resolve().parents[1] / "models" / "iris_svc.onnx"
ROWS = [[5.1, 3.5, 1.4, 0.2]]
LIMIT = float(np.finfo(np.float32).max)


def python_check(rows: list[list[float]]) -> None:
    """本体と同じ規則を Python で確かめる。"""
    for row in rows:
        for value in row:
            if not -LIMIT <= value <= LIMIT:
                raise ValueError(value)


def main() -> None:
    """測って表を表示する。"""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    output = [o.name for o in session.get_outputs() if o.type == "tensor(float)"]
    features = np.array(ROWS, dtype=np.float32)
    wide = np.array(ROWS)

    def run() -> object:
        return session.run(output, {name: features})

    def numpy_check() -> object:
        return (np.abs(wide) <= LIMIT).all()

    cases: dict[str, Callable[[], object]] = {
        "run only": run,
        "numpy check only": numpy_check,
        "python check only": lambda: python_check(ROWS),
        "numpy check + run": lambda: (numpy_check(), run()),
        "python check + run": lambda: (python_check(ROWS), run()),
    }
    number = 5000
    results: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(5):
        for key, case in cases.items():
            best = min(timeit.repeat(case, number=number, repeat=3))
            results[key].append(best / number * 1e6)
    print(f"{'case':22s} {'min µs':>8s} {'median µs':>10s}")
    for key, values in results.items():
        print(f"{key:22s} {min(values):8.2f} {statistics.median(values):10.2f}")


if __name__ == "__main__":
    main()
