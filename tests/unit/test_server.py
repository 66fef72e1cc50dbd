"""uvicorn の設定（uvloop・httptools・アクセスログ既定オフ・ワーカー）。"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from model_in_image.api.app import ModelServerApp
from model_in_image.server import app_from_env, prometheus_multiprocess_dir, uvicorn_config
from model_in_image.transport.connection import GuardedHttpToolsProtocol, ServerConfig
from support.apps import SettingsFactory


def test_single_process_config(make_settings: SettingsFactory) -> None:
    config = uvicorn_config(make_settings(port=8123, host="0.0.0.0"), multiprocess=False)
    assert config.loop == "model_in_image.transport.eventloop:Loop"
    assert config.http is GuardedHttpToolsProtocol
    assert isinstance(config, ServerConfig)
    assert config.limits.request_timeout == 30.0
    assert config.timeout_graceful_shutdown == 15
    assert config.access_log is False
    assert config.lifespan == "on"
    assert config.server_header is False
    assert config.proxy_headers is False
    assert (config.host, config.port, config.workers) == ("0.0.0.0", 8123, 1)
    assert config.factory is False
    assert isinstance(config.app, ModelServerApp)
    assert config.timeout_keep_alive == 5


def test_multiprocess_config_uses_the_factory(make_settings: SettingsFactory) -> None:
    settings = make_settings(workers=2, access_log=True, request_timeout_seconds=7)
    config = uvicorn_config(settings, multiprocess=True)
    assert config.app == "model_in_image.server:app_from_env"
    assert config.factory is True
    assert config.workers == 2
    # ACCESS_LOG はディスパッチャのアクセスログ：uvicorn のものは有効にしない
    assert config.access_log is False
    assert isinstance(config.log_config, dict)
    assert config.log_config["loggers"]["uvicorn.access"]["level"] == "WARNING"
    # ワーカーへは config ごと渡る（接続の上限もクラス属性ではなく config にある）
    assert isinstance(config, ServerConfig)
    assert pickle.loads(pickle.dumps(config.limits)) == config.limits
    assert config.limits.request_timeout == 7


def test_app_from_env(clean_env: pytest.MonkeyPatch, model_path: Path, label_path: Path) -> None:
    clean_env.setenv("MODEL_FILEPATH", str(model_path))
    clean_env.setenv("LABEL_FILEPATH", str(label_path))
    clean_env.setenv("MAX_BODY_BYTES", "4096")
    app = app_from_env()
    assert isinstance(app, ModelServerApp)
    assert app.settings.max_body_bytes == 4096


def test_prometheus_dir_is_temporary(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with prometheus_multiprocess_dir():
        directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert directory.is_dir()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert not directory.exists()


def test_prometheus_dir_from_the_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with prometheus_multiprocess_dir():
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
