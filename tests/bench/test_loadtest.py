"""locustfile.py の確認：実サーバー（127.0.0.1 の空きポート）に数秒だけ負荷をかける。"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# locust は import すると gevent でモンキーパッチする：このプロセスでは import せず有無だけ見る
pytestmark = pytest.mark.skipif(
    find_spec("locust") is None, reason="locust is in the bench dependency group"
)

SERVE = "from model_in_image.cli import main; raise SystemExit(main())"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"server not ready: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """本実装を 1 ワーカーで起動し、終わったらプロセスグループごと止める。"""
    port = _free_port()
    log = tmp_path_factory.mktemp("loadtest") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "COVERAGE_"))}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="1",
        LOG_LEVEL="WARNING",
        MODEL_FILEPATH=str(REPO_ROOT / "models" / "iris_svc.onnx"),
        LABEL_FILEPATH=str(REPO_ROOT / "models" / "label.json"),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _locust(url: str, summary: Path, *extra: str, seconds: int) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO_ROOT / "locustfile.py"),
        "--headless",
        "--only-summary",
        "-u",
        "10",
        "-r",
        "10",
        "-t",
        f"{seconds}s",
        "--host",
        url,
        "--summary-json",
        str(summary),
        *extra,
    ]
    return subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_loadtest_meets_the_targets(server_url: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = _locust(server_url, summary, seconds=5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["passed"] is True
    assert result["requests"] > 0
    assert result["failures"] == 0
    assert "targets p99 < 100 ms and > 100 req/s: PASSED" in done.stdout


def test_loadtest_fails_when_targets_are_missed(server_url: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = _locust(server_url, summary, "--p99-ms", "0", "--min-rps", "1e12", seconds=2)
    assert done.returncode == 1
    result = json.loads(summary.read_text())
    assert result["passed"] is False
    assert any("p99" in p for p in result["problems"])
    assert any("req/s is not above" in p for p in result["problems"])
