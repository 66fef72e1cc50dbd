"""動物園のテストの共通：ケースのモデルで起動したアプリ（設定ごとに一度だけ）。"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from model_in_image.settings import Settings
from support.env import clear_settings_env
from support.zoo import Serve, load_case


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """ケースのモデルでアプリを起動する（設定ごとに一度だけ、モジュールの終わりに止める）。"""
    opened: dict[tuple[Any, ...], TestClient] = {}
    with pytest.MonkeyPatch.context() as mp:
        clear_settings_env(mp)

        def start(name: str, **overrides: Any) -> TestClient:
            key = (name, *sorted(overrides.items()))
            if key not in opened:
                case = load_case(name)
                settings = Settings(
                    model_filepath=case.model, sample_data=case.rows[:1], **overrides
                )
                opened[key] = TestClient(create_app(settings)).__enter__()
            return opened[key]

        yield start
        for client in opened.values():
            client.__exit__(None, None, None)
