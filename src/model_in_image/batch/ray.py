"""Ray Data の map_batches に渡すクラス（`ray` extra。ray はここでは import しない）。

    ds.map_batches(RayScorer, fn_constructor_args=(scorer,), batch_format="pyarrow", concurrency=2)

Ray はクラスをアクター（ワーカーのプロセス）ごとに 1 度だけ作る。コンストラクターでモデルを読み、
各バッチ（pyarrow の Table）は frames.FrameScorer（CLI の Parquet と同じ検証と推論）で推論する。
"""

from __future__ import annotations

from typing import Any

from model_in_image.batch.frames import FrameScorer


class RayScorer:
    """アクターごとのモデルと、バッチ 1 つを推論する呼び出し（pyarrow の Table → Table）。"""

    def __init__(self, scorer: FrameScorer) -> None:
        self.scorer = scorer
        self.dataplane = scorer.dataplane  # ここで読む：最初のバッチを待たせない

    def __call__(self, batch: Any) -> Any:
        """1 バッチを推論する（不正な行は既定で BatchError、skip_invalid なら除く）。"""
        return self.scorer(batch)
