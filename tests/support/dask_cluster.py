"""テストが 127.0.0.1 に起こす Dask のクラスター：venv の `dask scheduler` と `dask worker`。

プロセスは PID で止める（terminate、5 秒で終わらなければ kill）。ワーカーはナニー無し
（殺したワーカーが生き返らない）・1 スレッド・ダッシュボード無し。
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

DASK = Path(sys.executable).parent / "dask"
START_TIMEOUT = 60.0


@dataclass
class DaskCluster:
    """起こしたスケジューラーのアドレスとワーカーのプロセス。"""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kill_worker(self, index: int = 0) -> int:
        """ワーカー 1 つを SIGKILL で殺す（作業の途中で落ちたワーカー）。PID を返す。"""
        worker = self.workers[index]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        return worker.pid


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(count, timeout=START_TIMEOUT)


@contextmanager
def dask_cluster(directory: Path, workers: int = 2) -> Iterator[DaskCluster]:
    """スケジューラーとワーカー workers 個を起こし、終わったら PID で止める。"""
    directory.mkdir(parents=True, exist_ok=True)
    info = directory / "scheduler.json"
    log = (directory / "dask.log").open("ab")
    common = {"stdout": log, "stderr": subprocess.STDOUT, "cwd": directory}
    scheduler = subprocess.Popen(
        [
            str(DASK),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(info),
        ],
        **common,  # type: ignore[call-overload]
    )
    cluster = DaskCluster("", scheduler)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not info.exists() or not info.read_text():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start; see {directory / 'dask.log'}")
            time.sleep(0.1)
        cluster.address = json.loads(info.read_text())["address"]
        for _ in range(workers):
            cluster.workers.append(
                subprocess.Popen(
                    [
                        str(DASK),
                        "worker",
                        cluster.address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--death-timeout",
                        "60",
                    ],
                    **common,  # type: ignore[call-overload]
                )
            )
        _wait_for_workers(cluster.address, workers)
        yield cluster
    finally:
        for worker in cluster.workers:
            _stop(worker)
        _stop(scheduler)
        log.close()
