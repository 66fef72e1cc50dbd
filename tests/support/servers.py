"""実サーバーをサブプロセスで起動する（127.0.0.1 の空きポート、/readyz を待つ）。

起動したプロセスだけを止める。
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from support.env import server_env
from support.net import HOST, free_port, free_ports, get_status, wait_for
from support.paths import REPO_ROOT

START_TIMEOUT = 90.0  # 混んだ 2 コアで 2 ワーカーの起動が 30 秒を超えたことがある
STOP_TIMEOUT = 15.0
SERVE = [sys.executable, "-m", "model_in_image.cli", "serve"]


@dataclass
class LiveServer:
    """起動したサーバー（base_url・pid・ログ）。"""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    stopped: bool = field(default=False)
    grpc_port: int = 0

    @property
    def grpc_target(self) -> str:
        """gRPC の宛先 127.0.0.1:GRPC_PORT（grpc=True で起動したときだけ）。"""
        assert self.grpc_port, "started without gRPC (grpc=True)"
        return f"{HOST}:{self.grpc_port}"

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """サーバーのプロセス ID。"""
        return self.process.pid

    def is_ready(self) -> bool:
        """/readyz が 200 か。"""
        return get_status(self.port, "/readyz") == 200

    def log(self) -> str:
        """これまでのログ。"""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self) -> None:
        """SIGTERM を送る（終了は待たない）。"""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """終了を待って終了コードを返す。"""
        return self.process.wait(timeout=timeout)

    def stop(self) -> int | None:
        """SIGTERM で止め、時間内に終わらなければ SIGKILL。"""
        if self.stopped:
            return self.process.returncode
        self.stopped = True
        self.terminate()
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            return None


def launch(
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    args: tuple[str, ...] = (),
    cwd: Path = REPO_ROOT,
    grpc: bool = False,
) -> LiveServer:
    """サーバーを起動する（準備完了は待たない）。env は server_env() への上書き。

    grpc なら空きポートを GRPC_PORT に渡す（既定では gRPC を切る。env の GRPC_PORT が優先）。
    """
    port = port or free_port()
    grpc_port = next(p for p in free_ports(2) if p != port) if grpc else 0
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SERVE, "--port", str(port), *args],
            cwd=cwd,
            env=server_env({"GRPC_PORT": str(grpc_port), **(env or {})}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return LiveServer(process, port, log_path, grpc_port=grpc_port)


def start_server(
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    args: tuple[str, ...] = (),
    grpc: bool = False,
) -> LiveServer:
    """サーバーを起動して readiness を待つ（ポートの競合なら別のポートで再試行）。"""
    for _ in range(3):
        server = launch(log_dir, env, args=args, grpc=grpc)
        try:
            wait_for(server.is_ready, START_TIMEOUT, "readiness", server.process)
        except AssertionError:
            server.stop()
            if "address already in use" in server.log().lower():
                continue
            raise AssertionError(f"server did not become ready:\n{server.log()}") from None
        return server
    raise AssertionError(f"no free port after 3 attempts:\n{server.log()}")


@contextlib.contextmanager
def running_server(
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    args: tuple[str, ...] = (),
    grpc: bool = False,
) -> Iterator[LiveServer]:
    """with 文でサーバーを起動・停止する。"""
    server = start_server(log_dir, env, args=args, grpc=grpc)
    try:
        yield server
    finally:
        server.stop()
