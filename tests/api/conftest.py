"""API テスト用：呼び出しを数える分類器・故障する分類器を注入したクライアント。"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.inference import build_service
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


@pytest.fixture
def spy_app(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppFactory]:
    """SpyClassifier を使うアプリとクライアントを作る（ウォームアップ後に記録を空にする）。"""
    clients: list[TestClient] = []
    monkeypatch.setattr("model_in_image.inference.OnnxClassifier", SpyClassifier)

    def factory(**overrides: Any) -> tuple[TestClient, SpyClassifier]:
        settings = make_settings(**overrides)
        service = build_service(settings)
        spy = service.classifier
        assert isinstance(spy, SpyClassifier)
        spy.calls.clear()
        client = TestClient(create_app(settings, service))
        clients.append(client.__enter__())
        return client, spy

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def app(settings: Settings) -> ModelServerApp:
    """ライフスパン前のアプリ（モデルはまだ読み込まれていない）。"""
    return create_app(settings)
