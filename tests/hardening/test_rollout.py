"""ロールアウト：keep-alive のクライアント 32 本が送り続ける中で SIGTERM・SIGHUP を受けても、
送ったリクエストは 1 件も失わない（応答が来るか、接続を拒まれて別の Pod へ行けるか）。
待ち受けを閉じる最後の瞬間に張られた接続にも応答する。
1 ワーカーと 2 ワーカーで同じ。起動の失敗は 1 行で、終了コードはワーカー数によらず同じ。
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from support.env import server_env
from support.net import HOST, free_port, get_status, wait_for
from support.samples import PREDICT_BODY
from support.servers import start_server

CLIENTS = 32
DRAIN_SECONDS = 2.0
LOAD_BEFORE_SIGNAL = 1.5
EXIT_TIMEOUT = 30.0
STARTUP_FAILURE = 3
# 送った後に応答が来なかったもの（接続の拒否は「送っていない」ので含めない）
LOST = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
    TimeoutError,
)


class Clients:
    """keep-alive の接続で /predict を送り続けるクライアント（Connection: close なら繋ぎ直す）。"""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]

    def _count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        served = 0  # この接続で受け取った応答の数
        while not self.stop.is_set():
            if conn is None:
                served = 0
                conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
                try:
                    conn.connect()
                except OSError:
                    self._count("refused")
                    conn = None
                    time.sleep(0.02)
                    continue
            try:
                conn.request("POST", "/predict", PREDICT_BODY, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
            except LOST as exc:
                where = "keep-alive" if served else "new connection"
                self._count(f"lost: {type(exc).__name__} on a {where}")
                conn.close()
                conn = None
                continue
            self._count(f"status {response.status}")
            served += 1
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def lost(self, where: str) -> int:
        """where（"keep-alive" か "new connection"）で失ったリクエストの数。"""
        return sum(
            n
            for outcome, n in self.outcomes.items()
            if outcome.startswith("lost") and where in outcome
        )


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_drains_without_losing_requests(
    tmp_path: Path, workers: int, signum: signal.Signals
) -> None:
    env = {"WORKERS": str(workers), "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS)}
    server = start_server(tmp_path, env)
    try:
        with Clients(server.port) as clients:
            time.sleep(LOAD_BEFORE_SIGNAL)
            server.process.send_signal(signum)
            code = server.wait(EXIT_TIMEOUT)
            time.sleep(0.2)
    finally:
        server.stop()
    outcomes = dict(clients.outcomes)
    assert code == 0, server.log()
    assert clients.lost("keep-alive") == 0, outcomes
    # 待ち受けを閉じる瞬間にカーネルが完了させた接続も失わない（閉じる前に新しい SYN を捨て、
    # キューを空にしてから閉じる：transport.handshakes）
    assert clients.lost("new connection") == 0, outcomes
    assert outcomes.get("status 200", 0) > 100, outcomes
    assert {key for key in outcomes if not key.startswith("lost")} <= {"status 200", "refused"}
    assert f"{signum.name}" in server.log()


def test_responses_during_the_drain_close_the_connection(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"SHUTDOWN_DRAIN_SECONDS": "3"})
    try:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
        conn.request("GET", "/livez")
        first = conn.getresponse()
        first.read()
        assert not first.will_close
        idle = http.client.HTTPConnection(HOST, server.port, timeout=5)
        idle.request("GET", "/livez")
        idle.getresponse().read()  # 応答を読み切った keep-alive の接続
        server.terminate()
        wait_for(lambda: get_status(server.port, "/readyz") == 503, 3.0, "readiness 503")
        conn.request("GET", "/livez")
        during = conn.getresponse()
        during.read()
        assert during.status == 200
        assert during.getheader("connection") == "close"
        # アイドルの keep-alive 接続は、ドレインの終わりを待たずに閉じられる
        assert idle.sock is not None
        idle.sock.settimeout(2.0)
        assert idle.sock.recv(4096) == b""
        idle.close()
        conn.close()
        assert server.wait(EXIT_TIMEOUT) == 0
    finally:
        server.stop()


def serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """起動に失敗するはずのサーバーを実行して、終わるのを待つ。"""
    return subprocess.run(
        [sys.executable, "-m", "model_in_image.cli", "serve", "--port", str(free_port())],
        env=server_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("log_format", ["TEXT", "JSON"])
def test_startup_failure_is_one_line_with_one_exit_code(
    tmp_path: Path, workers: str, log_format: str
) -> None:
    missing = tmp_path / "missing.onnx"
    done = serve_once(
        {"MODEL_FILEPATH": str(missing), "WORKERS": workers, "LOG_FORMAT": log_format}
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == STARTUP_FAILURE, lines
    assert len(lines) == 1, lines
    assert f"model file not found: {missing}" in lines[0]
    if log_format == "JSON":
        assert json.loads(lines[0])["level"] == "CRITICAL"


def test_killed_worker_leaves_no_stale_in_flight_gauge(tmp_path: Path) -> None:
    """2 ワーカーの 1 つを kill -9：置き換えの後、死んだワーカーのゲージのファイルは残らない。"""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = start_server(tmp_path, {"WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        gauges = wait_for_gauges(server.port, metrics_dir, want=2)
        victim = int(re.findall(r"_(\d+)\.db$", gauges[0].name)[0])
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not list(metrics_dir.glob(f"gauge_livesum_{victim}.db")), 60.0, "cleanup")
        wait_for(lambda: get_status(server.port, "/readyz") == 200, 60.0, "replacement")
        text = scrape(server.port)
        assert "model_in_image_requests_in_flight 1.0" in text  # このスクレイプの分だけ
        assert f"Child process [{victim}] died" in server.log()
    finally:
        server.stop()


def scrape(port: int) -> str:
    """新しい接続で /metrics を読む。"""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def wait_for_gauges(port: int, directory: Path, want: int) -> list[Path]:
    """両方のワーカーが処理中のゲージを書くまでスクレイプする（受け付けるワーカーは選べない）。"""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        scrape(port)
        gauges = sorted(directory.glob("gauge_livesum_*.db"))
        if len(gauges) >= want:
            return gauges
        time.sleep(0.05)
    raise AssertionError(f"only {list(directory.iterdir())} after 60 s")
