"""重いモデルの例：表形式の MLP（64 → 1024 → 1024 → 4、float32）を onnx の helper で書く。

適応バッチが効くかを測るための合成モデル（重みは固定の乱数、約 4.5 MB）。コミットはせず、
ハーネスが実行のたびに一時ディレクトリへ作る。1 行ずつでは ONNX Runtime が行列とベクトルの
積を繰り返すだけだが、行をまとめれば行列どうしの積になり、1 行あたりの時間が下がる。
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np

INPUTS = 64
HIDDEN = 1024
OUTPUTS = 4
OPSET = 17


def write_mlp(path: Path, *, seed: int = 0) -> Path:
    """MLP を path に書き、path を返す（入力 input [N, 64]、出力 logits [N, 4]）。"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    widths = (INPUTS, HIDDEN, HIDDEN, OUTPUTS)
    nodes, weights = [], []
    previous = "input"
    for layer, (fan_in, fan_out) in enumerate(pairwise(widths)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        weights += [
            numpy_helper.from_array(w, f"w{layer}"),
            numpy_helper.from_array(b, f"b{layer}"),
        ]
        last = layer == len(widths) - 2
        product, output = f"mm{layer}", "logits" if last else f"h{layer}"
        nodes.append(helper.make_node("MatMul", [previous, f"w{layer}"], [product]))
        nodes.append(
            helper.make_node("Add", [product, f"b{layer}"], [output if last else f"a{layer}"])
        )
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{layer}"], [output]))
        previous = output
    graph = helper.make_graph(
        nodes,
        "mlp_64_1024_1024_4",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", INPUTS])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", OUTPUTS])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def sample_row(width: int = INPUTS) -> list[float]:
    """負荷の 1 行（決まった値）。"""
    return [round(((i * 7) % 13) / 13 - 0.5, 3) for i in range(width)]
