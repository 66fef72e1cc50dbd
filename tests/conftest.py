"""テスト共通のフィクスチャ（リポジトリ同梱のモデル・設定・サービス・クライアント）。"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from model_in_image.api.app import create_app
from model_in_image.dataplane import DataPlane
from model_in_image.loading import load_dataplane
from model_in_image.settings import Settings
from support.apps import SettingsFactory
from support.env import clear_settings_env
from support.figures import figure_recorder, print_figures
from support.paths import MODELS_DIR, REFERENCE_DIR

with warnings.catch_warnings():
    # starlette は httpx2 を推奨する（httpx でも動く）：import 時の警告だけを抑える
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
    from fastapi.testclient import TestClient


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """外の環境変数に左右されないようにする。"""
    clear_settings_env(monkeypatch)
    return monkeypatch


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """リポジトリ同梱の models/。"""
    return MODELS_DIR


@pytest.fixture(scope="session")
def model_path(models_dir: Path) -> Path:
    """同梱の ONNX モデル。"""
    return models_dir / "iris_svc.onnx"


@pytest.fixture(scope="session")
def label_path(models_dir: Path) -> Path:
    """同梱のラベルファイル。"""
    return models_dir / "label.json"


@pytest.fixture(scope="session")
def card_path(models_dir: Path) -> Path:
    """同梱のモデルカード。"""
    return models_dir / "model_card.json"


def _make_settings(model_path: Path, label_path: Path, overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {"model_filepath": model_path, "label_filepath": label_path}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_settings(
    clean_env: pytest.MonkeyPatch, model_path: Path, label_path: Path
) -> SettingsFactory:
    """同梱モデルを指す Settings を作る（キーワード引数で上書き）。"""

    def factory(**overrides: Any) -> Settings:
        return _make_settings(model_path, label_path, overrides)

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """既定の Settings（同梱モデル）。"""
    return make_settings()


@pytest.fixture(scope="session")
def dataplane(model_path: Path, label_path: Path) -> DataPlane:
    """同梱モデルから作ったデータプレーン（セッションで共有。変更しないこと）。"""
    with pytest.MonkeyPatch.context() as mp:
        clear_settings_env(mp)
        return load_dataplane(_make_settings(model_path, label_path, {}))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """ライフスパンを実行する TestClient（同梱モデルを読み込む）。"""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def reference_dir() -> Path:
    """リポジトリに同梱した教科書のモデルとラベル（models/reference）。"""
    return REFERENCE_DIR


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig で変えたログ設定をテスト後に戻す。"""
    names = [None, "uvicorn", "uvicorn.error", "uvicorn.access"]
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    try:
        yield
    finally:
        for lg, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = disabled


@pytest.fixture(scope="session")
def timing_figure(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """測った時間を最後に表示する（判定は目標の 5 倍以上の余裕。精しい値はここと benchmarks）。"""
    return figure_recorder(pytestconfig, "model-in-image timings (printed, not asserted)")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """テストで測った値（コンテナの起動時間・Checkov の集計など）を最後に表示する。"""
    print_figures(terminalreporter, config)
