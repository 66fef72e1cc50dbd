"""V2 の推論リクエストを組み立てる。"""

from __future__ import annotations

from typing import Any

HEADER = "Inference-Header-Content-Length"


def infer_body(data: Any, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    """FP32 の入力 1 つのリクエスト。"""
    tensor = {"name": "input", "shape": shape or [1, 4], "datatype": "FP32", "data": data}
    return {"inputs": [tensor], **extra}
