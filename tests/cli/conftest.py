"""CLI テスト用：同梱モデルを環境変数で指し、ログ設定と SIGTERM を戻す。2 つ目のモデル。"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fruit import CardModel, write_fruit_model


@pytest.fixture(autouse=True)
def cli_env(
    clean_env: pytest.MonkeyPatch, model_path: Path, label_path: Path, restore_logging: None
) -> Iterator[pytest.MonkeyPatch]:
    """main() は環境変数から Settings を作り dictConfig を呼ぶ：テストごとに元へ戻す。"""
    clean_env.setenv("MODEL_FILEPATH", str(model_path))
    clean_env.setenv("LABEL_FILEPATH", str(label_path))
    original = signal.getsignal(signal.SIGTERM)
    try:
        yield clean_env
    finally:
        signal.signal(signal.SIGTERM, original)


@pytest.fixture(scope="session")
def fruit_model(tmp_path_factory: pytest.TempPathFactory) -> CardModel:
    """Iris と別の分類器（support.fruit）。"""
    return write_fruit_model(tmp_path_factory.mktemp("fruit"))
