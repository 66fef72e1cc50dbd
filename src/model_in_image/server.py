"""uvicorn の起動（uvloop + httptools、ワーカー数、ログ設定）。"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from uvicorn.supervisors import Multiprocess

from model_in_image.api.app import create_app
from model_in_image.dataplane import load_dataplane
from model_in_image.logconfig import logging_config
from model_in_image.settings import Settings
from model_in_image.transport.connection import (
    ConnectionLimits,
    GuardedHttpToolsProtocol,
    ServerConfig,
)

logger = logging.getLogger(__name__)

STARTUP_FAILURE = 3


def app_from_env() -> object:
    """ワーカープロセス用のファクトリ（環境変数から設定を読む）。"""
    return create_app(Settings())


def uvicorn_config(settings: Settings, *, multiprocess: bool) -> ServerConfig:
    """設定から uvicorn の設定を作る（接続の上限も config で各接続に届く）。"""
    app: object = "model_in_image.server:app_from_env" if multiprocess else create_app(settings)
    return ServerConfig(
        app,
        limits=ConnectionLimits(request_timeout=settings.request_timeout_seconds),
        factory=multiprocess,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,  # アクセスログはディスパッチャが書く（ACCESS_LOG）
        timeout_keep_alive=int(settings.timeout_keep_alive),
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
        server_header=False,
        proxy_headers=False,
    )


def serve(settings: Settings) -> int:
    """サーバーを起動し、終了コードを返す（SIGTERM での正常終了は 0）。"""
    # uvicorn は終了後に受けたシグナルを再送する：既定動作（143 で終了）にしない
    signal.signal(signal.SIGTERM, lambda *_: None)
    multiprocess = settings.workers > 1
    config = uvicorn_config(settings, multiprocess=multiprocess)
    server = uvicorn.Server(config)
    if not multiprocess:
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    config.configure_logging()
    load_dataplane(settings)  # ワーカーを起動する前に一度検証して即座に失敗させる
    with prometheus_multiprocess_dir():
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


@contextmanager
def prometheus_multiprocess_dir() -> Iterator[None]:
    """全ワーカーのメトリクスを合算するための共有ディレクトリ（指定が無ければ一時ディレクトリ）。"""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="model-in-image-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
