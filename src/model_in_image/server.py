"""uvicorn の起動（uvloop + httptools、ワーカー数、ログ設定）。"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from uvicorn.supervisors import Multiprocess

from model_in_image.api.app import create_app
from model_in_image.dataplane import DataPlane
from model_in_image.errors import ModelServerError
from model_in_image.loading import load_dataplane
from model_in_image.logconfig import logging_config
from model_in_image.metrics import mark_worker_dead
from model_in_image.settings import Settings
from model_in_image.transport.connection import GuardedHttpToolsProtocol
from model_in_image.transport.eventloop import reuseport_socket
from model_in_image.transport.limits import ConnectionLimits, ServerConfig

logger = logging.getLogger(__name__)

STARTUP_FAILURE = 3
# 複数ワーカーの親がワーカーの応答（起動中も）を待つ秒数。uvicorn の既定の 5 秒では、混んだ
# ノードで import に 13 秒かかったワーカーが起動のたびに殺され、いつまでも揃わなかった
WORKER_HEALTHCHECK_SECONDS = 30


def app_from_env() -> object:
    """ワーカープロセス用のファクトリ（環境変数から設定を読む）。"""
    return create_app(Settings())


def uvicorn_config(
    settings: Settings, *, multiprocess: bool, dataplane: DataPlane | None = None
) -> ServerConfig:
    """設定から uvicorn の設定を作る（接続の上限も config で各接続に届く）。

    1 プロセスなら dataplane（読み込み済みのモデル）をそのまま使う。複数ワーカーでは
    ワーカーごとに環境変数から読み込む。
    """
    app: object = (
        "model_in_image.server:app_from_env" if multiprocess else create_app(settings, dataplane)
    )
    return ServerConfig(
        app,
        limits=ConnectionLimits(
            request_timeout=settings.request_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_url_bytes=settings.max_url_bytes,
            max_body_bytes=settings.max_body_bytes,
        ),
        factory=multiprocess,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="model_in_image.transport.eventloop:Loop",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,  # アクセスログはディスパッチャが書く（ACCESS_LOG）
        timeout_keep_alive=int(settings.timeout_keep_alive),
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        server_header=False,
        proxy_headers=False,
        # リクエストのタスクは空の文脈で始める。パイプラインの次のリクエストは前のリクエストの
        # send の中で始まるため、そのままでは前のリクエストの文脈（リクエスト ID など）を
        # 引き継ぎ、接続が続く限り全リクエストが鎖のように残る
        reset_contextvars=True,
    )


def serve(settings: Settings) -> int:
    """サーバーを起動し、終了コードを返す（SIGTERM での正常終了は 0）。

    モデルは待ち受けを始める前に読み込んで確かめる。読めなければワーカー数によらず、
    理由を設定のログ形式で 1 行だけ書いて STARTUP_FAILURE で終わる。
    """
    # uvicorn は終了後に受けたシグナルを再送する：既定動作（143 で終了）にしない
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        dataplane = load_dataplane(settings)
    except ModelServerError as exc:
        logger.critical("start-up failed: %s", exc.message)
        return STARTUP_FAILURE
    multiprocess = settings.workers > 1
    config = uvicorn_config(
        settings, multiprocess=multiprocess, dataplane=None if multiprocess else dataplane
    )
    server = uvicorn.Server(config)
    if not multiprocess:
        sock = config.bind_socket()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
        return 0 if server.started else STARTUP_FAILURE
    config.configure_logging()
    try:
        shared = shared_port(settings)
    except OSError as exc:
        logger.critical("start-up failed: cannot listen on port %d: %s", settings.port, exc)
        return STARTUP_FAILURE
    with prometheus_multiprocess_dir():
        supervisor = Supervisor(config, sockets=[shared])
        supervisor.run()
    return STARTUP_FAILURE if supervisor.startup_failed else 0


def shared_port(settings: Settings) -> socket.socket:
    """ワーカーが各自の待ち受けソケットで加わる SO_REUSEPORT のポート（親は bind するだけ）。

    bind で使用中のポートを起動前に見つける。親は listen しないので、カーネルは接続を
    ワーカーの待ち受けソケットだけに振り分ける（transport.eventloop.worker_socket）。
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = reuseport_socket(family, (settings.host, settings.port))
    sock.set_inheritable(True)
    host = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    logger.info(
        "listening on http://%s:%d (one socket per worker, SO_REUSEPORT)", host, settings.port
    )
    return sock


class Supervisor(Multiprocess):
    """uvicorn のワーカー管理に、終了と故障の扱いを足したもの。

    - 終了：ワーカーに SIGTERM を送った後、親の待ち受けソケットを閉じる（親が持ったままだと、
      ワーカーがドレインを終えて閉じた後もカーネルが接続を受け付け、応答されずに切れる）。
    - SIGHUP：1 ワーカーのときと同じく SIGTERM と同じ正常終了（ワーカーはドレインする）。
    - 死んだワーカー：置き換えるときにその PID のメトリクスのファイルを片付ける
      （処理中のゲージが死んだワーカーの値のまま残らない）。
    """

    @property
    def startup_failed(self) -> bool:
        """ワーカーが起動に失敗して止まったか。"""
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)

    def terminate_all(self) -> None:
        """ワーカーに SIGTERM を送り、親の待ち受けソケットを閉じる。"""
        super().terminate_all()
        for sock in self.sockets:
            sock.close()

    def handle_hup(self) -> None:
        """SIGHUP は SIGTERM と同じ。"""
        logger.info("Received SIGHUP, exiting gracefully like SIGTERM.")
        self.should_exit.set()

    def keep_subprocess_alive(self) -> None:
        """死んだワーカーを置き換え、そのメトリクスのファイルを片付ける。"""
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                mark_worker_dead(pid)


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
