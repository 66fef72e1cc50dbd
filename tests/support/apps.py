"""API テスト用：呼び出しを記録するモデルと、設定・アプリのファクトリの型。"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from model_in_image.model.onnx_model import Array, Feeds, OnnxModel
from model_in_image.settings import Settings

SettingsFactory = Callable[..., Settings]


class SpyModel(OnnxModel):
    """本物のモデル。推論の呼び出し（1 入力ならその配列）を記録する。"""

    def __init__(self, model_path: Path, **kwargs: Any) -> None:
        self.calls: list[Any] = []
        self.failures = 0
        super().__init__(model_path, **kwargs)

    def _record(self, feeds: Feeds) -> None:
        self.calls.append(next(iter(feeds.values())) if len(feeds) == 1 else feeds)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("simulated fault in the model runtime")

    def predict(self, feeds: Feeds) -> Array:
        """記録してから推論する（failures が残っていれば RuntimeError）。"""
        self._record(feeds)
        return super().predict(feeds)

    def infer(self, feeds: Feeds) -> dict[str, Array]:
        """記録してからすべての出力を推論する。"""
        self._record(feeds)
        return super().infer(feeds)


AppFactory = Callable[..., tuple[TestClient, SpyModel]]
