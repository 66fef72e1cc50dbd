"""API テスト用：呼び出しを記録する分類器と、設定・アプリのファクトリの型。"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from model_in_image.runtime import FloatArray, OnnxClassifier
from model_in_image.settings import Settings

SettingsFactory = Callable[..., Settings]


class SpyClassifier(OnnxClassifier):
    """本物の分類器。predict_proba の呼び出しを記録する。"""

    def __init__(self, model_path: Path, label_path: Path, **kwargs: Any) -> None:
        self.calls: list[FloatArray] = []
        self.failures = 0
        super().__init__(model_path, label_path, **kwargs)

    def predict_proba(self, features: FloatArray) -> FloatArray:
        """記録してから推論する（failures が残っていれば RuntimeError）。"""
        self.calls.append(features)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("simulated fault in the model runtime")
        return super().predict_proba(features)


AppFactory = Callable[..., tuple[TestClient, SpyClassifier]]
