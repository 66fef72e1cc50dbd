"""floor と peer が共有する ONNX Runtime のセッション（1 スレッド、CPU）。

peer（BentoML）の別環境からも読むので、onnxruntime のほかは標準ライブラリだけを使う。
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def open_session(model_path: str | Path) -> tuple[ort.InferenceSession, str, str]:
    """1 スレッドのセッションと、入力名・最初の float テンソル（確率かロジット）の出力名を返す。"""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    output = next(o.name for o in session.get_outputs() if o.type == "tensor(float)")
    return session, session.get_inputs()[0].name, output
