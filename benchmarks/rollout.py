"""ロールアウトのベンチマーク：keep-alive のクライアントが送り続ける中で SIGTERM を N 回。

    uv run --frozen python -m benchmarks.rollout                      # 1・2 ワーカー、各 10 回
    uv run --frozen python -m benchmarks.rollout --runs 30 --workers 1 --clients 64

1 回ごとにサーバーを起動し（127.0.0.1 の空きポート）、クライアントのスレッドが keep-alive の
接続で POST /predict を送り続ける（Connection: close の応答の後は繋ぎ直す）。LOAD 秒の後に
ルートのプロセスへ SIGTERM を送り（kubelet と同じ）、終了まで送り続ける。数えるもの：

- sent：接続できて送ったリクエスト。answered：応答を最後まで受け取った。
- lost：送ったのに応答が来なかった（リセット・切断・期限切れ）。keep-alive の接続の上か、
  新しい接続の上かも分ける。
- refused：接続できなかった（送っていないので失っていない。別の Pod に繋ぎ直せる）。

1 回ごとの行と合計を表で出す（--json で JSON も）。
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.processes import HOST, STARTUP_SECONDS, free_port, request

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
HEADERS = {"Content-Type": "application/json"}
EXIT_SECONDS = 60.0
# 混んだ機械ではワーカーの起動が uvicorn のヘルスチェック（5 秒）に間に合わず殺されることがある
START_ATTEMPTS = 3
# 送った後に応答が来なかったもの（接続の拒否は「送っていない」ので含めない）
LOST = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Run:
    """1 回のロールアウトの結果。"""

    workers: int
    sent: int
    answered: int
    lost_keep_alive: int
    lost_new_connection: int
    refused: int
    statuses: dict[str, int]
    exit_code: int | None
    seconds: float

    @property
    def lost(self) -> int:
        """送ったのに応答が来なかった数。"""
        return self.lost_keep_alive + self.lost_new_connection


class Clients:
    """keep-alive の接続で /predict を送り続けるスレッド（Connection: close なら繋ぎ直す）。"""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _count(self, *keys: str) -> None:
        with self.lock:
            self.counts.update(keys)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        served = 0
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
                conn.request("POST", "/predict", BODY, HEADERS)
                response = conn.getresponse()
                response.read()
            except LOST:
                self._count("sent", "lost keep-alive" if served else "lost new connection")
                conn.close()
                conn = None
                continue
            self._count("sent", "answered", f"status {response.status}")
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


def start(port: int, workers: int, drain: float, log: Path) -> subprocess.Popen[bytes]:
    """サーバーを起動して /readyz を待つ。"""
    env = {
        **os.environ,
        "HOST": HOST,
        "WORKERS": str(workers),
        "SHUTDOWN_DRAIN_SECONDS": str(drain),
        "GRPC_PORT": "0",
        "ACCESS_LOG": "false",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "model_in_image.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=EXIT_SECONDS)
    raise RuntimeError(f"server not ready in {STARTUP_SECONDS:.0f} s:\n{log.read_text()[-2000:]}")


def start_with_retries(
    workers: int, drain: float, directory: Path
) -> tuple[int, subprocess.Popen[bytes]]:
    """起動に失敗したら別のポートでやり直す（START_ATTEMPTS 回まで）。"""
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        try:
            return port, start(port, workers, drain, directory / f"server-{port}.log")
        except RuntimeError as exc:
            print(f"# start failed (attempt {attempt}): {str(exc)[-300:]}", file=sys.stderr)
    raise RuntimeError(f"the server did not start in {START_ATTEMPTS} attempts")


def rollout(workers: int, clients: int, load: float, drain: float, directory: Path) -> Run:
    """1 回：起動、負荷、SIGTERM、終了まで負荷、結果。"""
    port, proc = start_with_retries(workers, drain, directory)
    code: int | None = None
    began = time.monotonic()
    try:
        with Clients(port, clients) as load_clients:
            time.sleep(load)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=EXIT_SECONDS)
            time.sleep(0.2)  # 閉じた後に接続を試みる分も数える
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=EXIT_SECONDS)
    counts = load_clients.counts
    return Run(
        workers=workers,
        sent=counts["sent"],
        answered=counts["answered"],
        lost_keep_alive=counts["lost keep-alive"],
        lost_new_connection=counts["lost new connection"],
        refused=counts["refused"],
        statuses={key: n for key, n in counts.items() if key.startswith("status")},
        exit_code=code,
        seconds=round(time.monotonic() - began, 2),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="ワーカー数ごとの回数（既定 10）")
    parser.add_argument("--workers", default="1,2", help="ワーカー数（カンマ区切り、既定 1,2）")
    parser.add_argument("--clients", type=int, default=32, help="クライアントのスレッド数")
    parser.add_argument("--load", type=float, default=1.5, help="SIGTERM の前に負荷をかける秒")
    parser.add_argument("--drain", type=float, default=2.0, help="SHUTDOWN_DRAIN_SECONDS")
    parser.add_argument("--json", type=Path, help="結果を JSON で書くファイル")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """ロールアウトを繰り返して表を出す。1 件でも失えば終了コード 1。"""
    args = parse_args(argv)
    worker_counts = [int(value) for value in args.workers.split(",")]
    print(
        f"# rollout: {args.runs} runs x workers {worker_counts}, {args.clients} keep-alive "
        f"clients, SIGTERM after {args.load} s, drain {args.drain} s "
        f"({platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()})"
    )
    print("| workers | run | sent | answered | lost (keep-alive / new) | refused | exit | s |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="rollout-") as directory:
        for workers in worker_counts:
            for index in range(1, args.runs + 1):
                run = rollout(workers, args.clients, args.load, args.drain, Path(directory))
                runs.append(run)
                print(
                    f"| {workers} | {index} | {run.sent:,} | {run.answered:,} | {run.lost} "
                    f"({run.lost_keep_alive} / {run.lost_new_connection}) | {run.refused:,} "
                    f"| {run.exit_code} | {run.seconds} |",
                    flush=True,
                )
    for workers in worker_counts:
        mine = [run for run in runs if run.workers == workers]
        sent, lost = sum(run.sent for run in mine), sum(run.lost for run in mine)
        print(f"total, {workers} worker(s): {len(mine)} runs, {sent:,} sent, {lost} lost")
    sent, lost = sum(run.sent for run in runs), sum(run.lost for run in runs)
    print(f"total: {len(runs)} runs, {sent:,} sent, {lost} lost")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(run) for run in runs], indent=2) + "\n")
    bad_exit = any(run.exit_code != 0 for run in runs)
    return 1 if lost or bad_exit else 0


if __name__ == "__main__":
    raise SystemExit(main())
