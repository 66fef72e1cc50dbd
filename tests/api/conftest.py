"""API テスト用：呼び出しを数える分類器・故障する分類器を注入したクライアント。"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.loading import load_dataplane
from model_in_image.settings import Settings
from support.apps import AppFactory, SettingsFactory, SpyModel


@pytest.fixture
def spy_app(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppFactory]:
    """SpyModel を使うアプリとクライアントを作る（ウォームアップ後に記録を空にする）。"""
    clients: list[TestClient] = []
    monkeypatch.setattr("model_in_image.loading.OnnxModel", SpyModel)

    def factory(**overrides: Any) -> tuple[TestClient, SpyModel]:
        settings = make_settings(**overrides)
        dataplane = load_dataplane(settings)
        spy = dataplane.model
        assert isinstance(spy, SpyModel)
        spy.calls.clear()
        client = TestClient(create_app(settings, dataplane))
        clients.append(client.__enter__())
        return client, spy

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def app(settings: Settings) -> ModelServerApp:
    """ライフスパン前のアプリ（モデルはまだ読み込まれていない）。"""
    return create_app(settings)
