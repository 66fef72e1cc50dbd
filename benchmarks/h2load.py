"""gRPC の負荷を h2load（nghttp2 の C の HTTP/2 負荷ツール）でかける：クライアントが律速しない。

gRPC は HTTP/2 の POST（content-type: application/grpc、te: trailers、本文は 5 バイトの枠 +
protobuf）なので、前もって直列化したリクエストを枠に入れたファイルを h2load の -d で送れば、
ワイヤー上は grpc のクライアントと同じ RPC になる。接続数 = 同時リクエスト数（-c、-m1）。
h2load は HTTP の状態（常に 200）しか見ないので、gRPC の状態は呼び出し側がサーバーの
/metrics で数える（measure.grpc_failures）。p50/p99 は --log-file の 1 件ごとの時間から。

Debian/Ubuntu：apt-get install nghttp2-client。無ければ Python のクライアント（grpc_load）を使う。
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.wrk import WrkResult

# 計測の前に捨てる時間（秒、h2load の --warm-up-time は整数秒）
WARMUP_SECONDS = 1
_COUNTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)


def find() -> str | None:
    """h2load の実行ファイル（無ければ None）。"""
    return shutil.which("h2load")


def framed(message: bytes) -> bytes:
    """gRPC の長さ付きメッセージ（圧縮なしの印 0 + 4 バイト BE の長さ + 本体）。"""
    return b"\x00" + struct.pack(">I", len(message)) + message


def command(
    h2load: str, url: str, body: Path, log: Path, *, connections: int, seconds: int
) -> list[str]:
    """h2load のコマンドライン（1 スレッド、接続ごとに同時 1 本）。"""
    return [
        h2load,
        "-t1",
        f"-c{connections}",
        "-m1",
        f"-D{seconds}",
        f"--warm-up-time={WARMUP_SECONDS}",
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"--log-file={log}",
        url,
    ]


def parse(stdout: str, log_text: str, seconds: float) -> WrkResult:
    """h2load の要約と 1 件ごとのログ（開始 µs、状態、所要 µs）を wrk と同じ形にする。"""
    counts = _COUNTS.search(stdout)
    if counts is None:
        raise ValueError(f"no request counts in h2load output:\n{stdout[-2000:]}")
    _, _, _, succeeded, failed, errored, timeout = (int(v) for v in counts.groups())
    durations = [
        int(fields[2])
        for fields in (line.split("\t") for line in log_text.splitlines())
        if len(fields) == 3 and fields[1] == "200"
    ]
    values = np.asarray(durations, dtype=np.float64) / 1000  # ms
    p50 = p90 = p99 = 0.0
    if values.size:
        p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    return WrkResult(
        requests=succeeded,
        duration_s=seconds,
        socket_errors=errored + timeout,
        non_2xx=failed - errored - timeout,  # failed は errored と timeout を含む
        timeouts=timeout,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(values.mean()) if values.size else 0.0,
        max_ms=float(values.max()) if values.size else 0.0,
    )


def run(h2load: str, url: str, message: bytes, *, connections: int, seconds: int) -> WrkResult:
    """1 回実行する（本文とログは一時ディレクトリに置いて消す）。"""
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        body, log = Path(tmp) / "request.bin", Path(tmp) / "requests.log"
        body.write_bytes(framed(message))
        argv = command(h2load, url, body, log, connections=connections, seconds=seconds)
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + WARMUP_SECONDS + 60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr[-2000:]}")
        log_text = log.read_text() if log.exists() else ""
    return parse(done.stdout, log_text, float(seconds))
