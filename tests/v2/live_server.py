"""実サーバーをサブプロセスで起動する（127.0.0.1 の空きポート、/readyz を待つ）。

tests/v2・tests/hardening・tests/browser が共有する。起動したプロセスだけを止める。
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from model_in_image.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SERVE = "from model_in_image.cli import main; raise SystemExit(main())"


def free_port() -> int:
    """127.0.0.1 の空きポート。"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """親の設定用環境変数を消し、同梱モデルと 127.0.0.1 を指す環境。"""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(
        {
            "HOST": HOST,
            "MODEL_FILEPATH": str(REPO_ROOT / "models" / "iris_svc.onnx"),
            "LABEL_FILEPATH": str(REPO_ROOT / "models" / "label.json"),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@dataclass
class LiveServer:
    """起動したサーバー（base_url・pid・ログ）。"""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """サーバーのプロセス ID。"""
        return self.process.pid

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


def _wait_ready(server: LiveServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/readyz").status_code == 200:
                    return True
            time.sleep(0.1)
    return False


def start_server(log_dir: Path, env: Mapping[str, str] | None = None) -> LiveServer:
    """サーバーを起動して readiness を待つ（ポートの競合なら別のポートで再試行）。"""
    for attempt in range(3):
        port = free_port()
        log_path = log_dir / f"server-{port}-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", SERVE, "serve", "--port", str(port)],
                cwd=REPO_ROOT,
                env=server_env(env or {}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = LiveServer(process, port, log_path)
        if _wait_ready(server, START_TIMEOUT):
            return server
        server.stop()
        if "address already in use" not in server.log().lower():
            break
    raise RuntimeError(f"server did not become ready:\n{server.log()}")


@contextlib.contextmanager
def running_server(log_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[LiveServer]:
    """with 文でサーバーを起動・停止する。"""
    server = start_server(log_dir, env)
    try:
        yield server
    finally:
        server.stop()
