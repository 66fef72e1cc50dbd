"""1 リクエストあたりの命令数（valgrind --tool=callgrind）：機械の混み具合に左右されない費用の比較。

    uv run --frozen python -m benchmarks.instructions      # floor・ours・機能ごとに切った ours
    uv run --frozen python -m benchmarks.instructions --variants floor,ours --requests 500

各サーバーを 1 ワーカーで callgrind の下に起動し、1 本の keep-alive 接続で 1 行の /predict を
順に送る。暖機の後に callgrind_control で計数を 0 にし、N 件を送ってから書き出させ、その合計を N で
割る。待ちの間（epoll）は命令を数えないので、ほかのプロセスが CPU を使っていても値は変わらない。
ただし裏のスレッドの周期的な仕事は数えに入る（valgrind の下では 1 件が遅いので少し多めに出る）。
valgrind の下の起動は数分かかる（混んだ 2 コアで ours は約 12 分）。サーバーは並べて起動する。
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.processes import HOST, free_port
from benchmarks.variants import ROOT

READY_SECONDS = 1800.0
BODY = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
HEADERS = {"Content-Type": "application/json"}
_FLOOR = [
    "-m", "uvicorn", "benchmarks.floor_app:create_app", "--factory", "--host", HOST,
    "--port", "{port}", "--workers", "1", "--loop", "uvloop", "--http", "httptools",
    "--lifespan", "off", "--no-access-log", "--no-server-header", "--log-level", "warning",
]  # fmt: skip
_OURS = ["-m", "model_in_image.cli", "serve"]
# 名前 → (python の引数, 環境変数)。機能を 1 つずつ切った ours との差がその機能の費用
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "floor": (_FLOOR, {}),
    "ours": (_OURS, {}),
    "ours-noaccesslog": (_OURS, {"ACCESS_LOG": "false"}),
    "ours-nomonitoring": (_OURS, {"PREDICTION_MONITORING": "false"}),
    "ours-nometrics": (_OURS, {"METRICS_ENABLED": "false"}),  # 監視も止まる（メトリクスが要る）
    "ours-bare": (_OURS, {"ACCESS_LOG": "false", "METRICS_ENABLED": "false"}),
}
_SUMMARY = re.compile(r"^summary: (\d+)$", re.M)


def _send(port: int, count: int) -> None:
    """1 本の keep-alive 接続で 1 行の /predict を count 件、順に送る（127.0.0.1 だけ）。"""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        for _ in range(count):
            conn.request("POST", "/predict", body=BODY, headers=HEADERS)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/predict returned {response.status}")
    finally:
        conn.close()


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(1.0)
    raise RuntimeError("server not ready")


def _control(env: Mapping[str, str], prefix: str, action: str, pid: int) -> None:
    """callgrind_control（valgrind は環境変数 HOST をファイル名に使う：サーバーと同じ環境で）。"""
    subprocess.run(
        ["callgrind_control", f"--vgdb-prefix={prefix}", action, str(pid)],
        env=dict(env),
        check=True,
        capture_output=True,
        timeout=300,
    )


def measure(name: str, requests: int, warmup: int, workdir: Path) -> float:
    """variant を callgrind の下で動かし、1 リクエストあたりの命令数を返す。"""
    args, extra = VARIANTS[name]
    port = free_port()
    values = {"port": str(port)}
    env = {**os.environ, "HOST": HOST, "PORT": str(port), "GRPC_PORT": str(free_port())}
    env.update({"WORKERS": "1", **extra})
    out = workdir / name
    out.mkdir(parents=True, exist_ok=True)
    prefix = str(out / "vgdb")
    argv = [
        "valgrind", "--tool=callgrind", f"--vgdb-prefix={prefix}",
        f"--callgrind-out-file={out}/callgrind.%p", sys.executable,
        *(arg.format_map(values) for arg in args),
    ]  # fmt: skip
    with (out / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(port, proc)
        _send(port, warmup)
        _control(env, prefix, "--zero", proc.pid)
        _send(port, requests)
        _control(env, prefix, "--dump", proc.pid)
        dumps: list[str] = []
        deadline = time.monotonic() + 300
        while not dumps and time.monotonic() < deadline:
            time.sleep(1.0)
            dumps = glob.glob(f"{out}/callgrind.{proc.pid}.*")
        time.sleep(2.0)  # 書き終わるまで
        match = _SUMMARY.search(Path(dumps[0]).read_text()) if dumps else None
        if match is None:
            raise RuntimeError(f"{name}: no callgrind dump")
        return int(match.group(1)) / requests
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--requests", type=int, default=300, help="counted requests per variant")
    parser.add_argument("--warmup", type=int, default=100, help="requests before counting")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind files")
    args = parser.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or shutil.which("valgrind") is None:
        parser.error(f"unknown variants {unknown}" if unknown else "valgrind not found")
    workdir = Path(tempfile.mkdtemp(prefix="mii-instructions-"))
    try:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = [pool.submit(measure, n, args.requests, args.warmup, workdir) for n in names]
            counts = {name: future.result() for name, future in zip(names, futures, strict=True)}
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    base = counts.get("floor")
    print(f"instructions per 1-row /predict (callgrind, 1 worker, {args.requests} requests)")
    for name, count in counts.items():
        ratio = f"  {count / base:.2f}x floor" if base else ""
        print(f"  {name:<20} {count:>10,.0f}{ratio}")
    if "ours" in counts:
        for name, count in counts.items():
            if name.startswith("ours-"):
                cost = counts["ours"] - count
                print(f"  ours - {name:<13} {cost:>10,.0f}  ({cost / counts['ours']:.1%} of ours)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
