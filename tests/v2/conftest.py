"""V2 テスト用：実サーバー（tritonclient 用）と、モデル未読み込みのクライアント。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.settings import Settings
from support.servers import LiveServer, running_server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """127.0.0.1 の空きポートで動く実サーバー（モジュールで共有）。"""
    with running_server(tmp_path_factory.mktemp("v2-server")) as server:
        yield server


@pytest.fixture
def unready_app(settings: Settings) -> ModelServerApp:
    """ライフスパン前（モデル未読み込み）のアプリ。"""
    return create_app(settings)


@pytest.fixture
def unready_client(unready_app: ModelServerApp) -> TestClient:
    """ライフスパンを実行しないクライアント（readiness は 503）。"""
    return TestClient(unready_app)
