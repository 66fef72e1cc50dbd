"""locustfile.py の確認：実サーバー（127.0.0.1 の空きポート）に数秒だけ負荷をかける。"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from support.paths import REPO_ROOT
from support.servers import running_server

# locust は import すると gevent でモンキーパッチする：このプロセスでは import せず有無だけ見る
pytestmark = pytest.mark.skipif(
    find_spec("locust") is None, reason="locust is in the bench dependency group"
)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """本実装を 1 ワーカーで起動する（終わったら止める）。"""
    env = {"WORKERS": "1", "LOG_LEVEL": "WARNING"}
    with running_server(tmp_path_factory.mktemp("loadtest"), env) as server:
        yield server.base_url


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


def test_loadtest_passes_targets_it_meets(server_url: str, tmp_path: Path) -> None:
    """合否の判定が通る側を確かめる。既定の目標（p99 < 100 ms）は機械の混み具合で外れるので
    （CI で CPU の重い処理の横では p99 130 ms だった）、ここでは必ず満たせる目標を渡す。
    速さそのものはベンチマーク（make bench・make loadtest）で測る。"""
    summary = tmp_path / "summary.json"
    done = _locust(server_url, summary, "--p99-ms", "10000", "--min-rps", "1", seconds=3)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["passed"] is True
    assert result["requests"] > 0
    assert result["failures"] == 0
    assert "targets p99 < 10000 ms and > 1 req/s: PASSED" in done.stdout


def test_loadtest_fails_when_targets_are_missed(server_url: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = _locust(server_url, summary, "--p99-ms", "0", "--min-rps", "1e12", seconds=2)
    assert done.returncode == 1
    result = json.loads(summary.read_text())
    assert result["passed"] is False
    assert any("p99" in p for p in result["problems"])
    assert any("req/s is not above" in p for p in result["problems"])
