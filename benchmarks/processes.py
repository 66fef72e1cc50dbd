"""ベンチマークするサーバーの起動・準備完了の確認・停止（プロセスグループ単位）。"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO

from benchmarks import grpc_load
from benchmarks.variants import GRPC, V2, Load, Variant, expand

HOST = "127.0.0.1"
STARTUP_SECONDS = 120.0
STOP_SECONDS = 15.0
# 起動スクリプトや利用者の環境から漏れると条件が変わる変数（run.sh と Settings の名前）
_SCRUB = (
    "HOST",
    "PORT",
    "WORKERS",
    "UVICORN_WORKER",
    "LOGLEVEL",
    "LOGCONFIG",
    "BACKLOG",
    "LIMIT_MAX_REQUESTS",
    "MAX_REQUESTS_JITTER",
    "GRACEFUL_TIMEOUT",
    "APP_NAME",
    "GUNICORN_CMD_ARGS",
    "FLOOR_MODEL",
)


class ServerStartError(RuntimeError):
    """サーバーが起動しなかった。"""


def free_port() -> int:
    """127.0.0.1 の空きポート。"""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    """1 リクエストを送る（127.0.0.1 だけ）。"""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def server_env(
    variant: Variant, values: Mapping[str, str], settings_env: Sequence[str]
) -> dict[str, str]:
    """利用者の環境から条件を変える変数を除き、variant の変数を足す。"""
    scrub = {*_SCRUB, *settings_env}
    env = {k: v for k, v in os.environ.items() if k not in scrub}
    env.update({k: expand(v, values) for k, v in variant.env.items()})
    return env


class Server:
    """variant を 1 つ起動し、終了時にプロセスグループごと止める。"""

    def __init__(
        self, variant: Variant, argv: list[str], env: dict[str, str], port: int, grpc_port: int = 0
    ) -> None:
        self.variant = variant
        self.argv = argv
        self.env = env
        self.port = port
        self.grpc_port = grpc_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """ルートプロセスの pid（= プロセスグループ id）。"""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Server:
        self.log = tempfile.TemporaryFile()  # stop() で閉じる
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.variant.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, limit: int = 3000) -> str:
        """サーバーの出力の末尾。"""
        if self.log is None:
            return ""
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - limit))
        return self.log.read().decode("utf-8", "replace")

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.variant.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if request(self.port, "GET", self.variant.health_path)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServerStartError(
            f"{self.variant.name} not ready in {STARTUP_SECONDS:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM をグループに送り、待っても終わらなければ SIGKILL。"""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session=True なのでグループ id = pid
        self._signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._signal_group(pgid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_SECONDS)
        # 親が先に終わってもワーカーが残っていれば止める
        deadline = time.monotonic() + STOP_SECONDS
        while self._group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._group_alive(pgid):
            self._signal_group(pgid, signal.SIGKILL)
        if self.log is not None:
            self.log.close()
            self.log = None
        self.proc = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True


def check_response(server: Server, load: Load) -> str:
    """計測前に 1 回送り、正しく答えることを確かめる（応答の要約を返す）。"""
    if load.api == GRPC:
        try:
            return grpc_load.check(f"{HOST}:{server.grpc_port}", load.rows)
        except Exception as exc:
            raise ServerStartError(f"gRPC {load.path} failed: {exc}") from None
    status, body = request(server.port, "POST", load.path, load.body())
    answer = json.loads(body) if status == 200 else None
    if server.variant.peer:  # peer は行の JSON の配列で答える
        answered = isinstance(answer, list) and len(answer) == load.rows
    else:
        answered = (
            isinstance(answer, dict) and ("outputs" if load.api == V2 else "prediction") in answer
        )
    if not answered:
        raise ServerStartError(f"POST {load.path} returned {status}: {body[:300]!r}")
    return body[:120].decode("utf-8", "replace")
