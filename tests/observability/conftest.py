"""観測機能のテスト用：アクセスログを BytesIO に受けるアプリとクライアント。"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.dataplane import DataPlane
from model_in_image.metrics import MetricsExtension
from support.apps import SettingsFactory
from support.samples import JSON


@dataclass
class Observed:
    """起動済みのアプリ・クライアント・アクセスログの出力先。"""

    client: TestClient
    app: ModelServerApp
    stream: io.BytesIO
    closed: bool = False

    def access_lines(self) -> list[str]:
        """これまでのアクセスログの行（書き残しを書き出してから読む）。"""
        access_log = self.app.observability.telemetry.access_log
        if access_log is not None:
            access_log.flush()
        return self.stream.getvalue().decode("utf-8").splitlines()

    def close(self) -> None:
        """ライフスパンの終了処理まで実行する（残りのスパン・予測ログを送り終える）。"""
        if not self.closed:
            self.closed = True
            self.client.__exit__(None, None, None)

    def metrics(self) -> str:
        """/metrics の本文。"""
        response = self.client.get("/metrics")
        assert response.status_code == 200
        return response.text


Observe = Callable[..., Observed]


def exposed_families(extension: MetricsExtension, *registries: CollectorRegistry) -> dict[str, Any]:
    """registries（ワーカーごとのメトリクス）を合わせて extension が書き換えた出力（名前 → 族）。"""
    families = [family for registry in registries for family in registry.collect()]
    return {family.name: family for family in extension.transform(families)}


def post_predict(observed: Observed, rows: Any, batch: int = 100) -> list[Any]:
    """rows を batch 行ずつ POST /predict し、応答ごとの prediction を返す。"""
    predictions = []
    data = np.asarray(rows).tolist()
    for start in range(0, len(data), batch):
        body = orjson.dumps({"data": data[start : start + batch]})
        response = observed.client.post("/predict", content=body, headers=JSON)
        assert response.status_code == 200, response.text
        predictions.append(response.json()["prediction"])
    return predictions


@pytest.fixture
def observe(make_settings: SettingsFactory) -> Iterator[Observe]:
    """設定を上書きしたアプリを起動する（テストの終わりにライフスパンの終了まで実行する）。"""
    opened: list[Observed] = []

    def factory(dataplane: DataPlane | None = None, **overrides: Any) -> Observed:
        app = create_app(make_settings(**overrides), dataplane)
        stream = io.BytesIO()
        if app.observability.telemetry.access_log is not None:
            app.observability.telemetry.access_log.stream = stream
        client = TestClient(app)
        client.__enter__()
        opened.append(Observed(client, app, stream))
        return opened[-1]

    yield factory
    for observed in opened:
        observed.close()
