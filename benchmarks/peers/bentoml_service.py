"""比較相手（peer）：BentoML 1.4 が同じ ONNX モデルを自分の適応バッチで提供する。

ハーネスが別の仮想環境（bentoml-requirements.txt、uv run --with-requirements）で

    bentoml serve benchmarks.peers.bentoml_service:Peer --host 127.0.0.1 --port N

として起動する（このリポジトリの環境には BentoML を入れない）。設定は環境変数：
PEER_MODEL（ONNX の道）、PEER_WORKERS、PEER_MAX_BATCH_SIZE（1 ならバッチしない）、
PEER_MAX_LATENCY_MS（BentoML の max_latency_ms：これを超えそうなリクエストは 503）。
ボディは本実装のシード API と同じ {"data": [[...], ...]}、応答は確率（またはロジット）の行の
JSON の配列。ONNX Runtime は floor と同じ 1 スレッド。
"""

from __future__ import annotations

import os

import bentoml
import numpy as np

from benchmarks.onnx_session import open_session

MODEL = os.environ.get("PEER_MODEL", "models/iris_svc.onnx")
WORKERS = int(os.environ.get("PEER_WORKERS", "1"))
MAX_BATCH_SIZE = int(os.environ.get("PEER_MAX_BATCH_SIZE", "1"))
MAX_LATENCY_MS = int(os.environ.get("PEER_MAX_LATENCY_MS", "1000"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 30})
class Peer:
    """POST /predict（BentoML の流儀：引数名 data が JSON のキー）。"""

    def __init__(self) -> None:
        self.session, self.input, self.output = open_session(MODEL)

    def _run(self, data: np.ndarray) -> np.ndarray:
        rows = np.asarray(data, dtype=np.float32)
        return self.session.run([self.output], {self.input: rows})[0]

    if MAX_BATCH_SIZE > 1:

        @bentoml.api(
            route="/predict",
            batchable=True,
            batch_dim=0,
            max_batch_size=MAX_BATCH_SIZE,
            max_latency_ms=MAX_LATENCY_MS,
        )
        def predict(self, data: np.ndarray) -> np.ndarray:
            """BentoML がまとめた行（各リクエストの data を 0 軸で連結）を 1 回で推論する。"""
            return self._run(data)

    else:

        @bentoml.api(route="/predict")
        def predict(self, data: np.ndarray) -> np.ndarray:
            """1 リクエストずつ推論する。"""
            return self._run(data)
