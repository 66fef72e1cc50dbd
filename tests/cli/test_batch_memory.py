"""predict を別プロセスで：200 万行を流してもピーク RSS が一定、パイプが閉じても静かに終わる。"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import pytest

from support.env import server_env
from support.figures import figure_recorder

PREDICT = [sys.executable, "-m", "model_in_image.cli", "predict", "-", "--quiet"]
# 同じ predict を、終わるときに自分の VmHWM（このプロセスのメモリのピーク）を
# 標準エラーの最後に書いて実行する。
# wait4 の ru_maxrss は exec の前の値（fork した pytest の RSS）を引き継ぐので使えない
MEASURED = [
    sys.executable,
    "-c",
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    status = open('/proc/self/status').read()\n"
    "    sys.stderr.write([x for x in status.splitlines() if x.startswith('VmHWM:')][0] + '\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv = ['model-in-image', 'predict', '-', '--quiet']\n"
    "runpy.run_module('model_in_image.cli', run_name='__main__')\n",
]
LARGE_ROWS = 2_000_000
BLOCK_ROWS = 10_000
# 200 万行を一度に持てば、行のバイト列だけで 30 MB を超える（配列やリストならその数倍）。
# チャンクごとに読むなら、1 行だけのときとの差はチャンク数個分（数 MB）で済む
RSS_MARGIN_BYTES = 40 * 2**20
TIMEOUT = 240.0


@dataclass(frozen=True)
class Started:
    """起動したプロセスと、その標準入力・標準出力・標準エラー。"""

    process: subprocess.Popen[bytes]
    stdin: IO[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]


@dataclass(frozen=True)
class Finished:
    """終わったプロセス：終了コード・ピーク RSS（VmHWM）・出力の行数・標準エラー。"""

    code: int
    peak_rss: int
    lines: int
    stderr: bytes


def _block() -> bytes:
    """Iris の範囲の 1 万行（全部違う行）。"""
    return b"".join(
        b"%.1f,%.1f,%.1f,%.1f\n"
        % (4.3 + i % 36 / 10, 2.0 + i % 24 / 10, 1.0 + i % 59 / 10, 0.1 + i % 24 / 10)
        for i in range(BLOCK_ROWS)
    )


@contextmanager
def _watchdog(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """時間内に終わらなければ殺す（wait4 には期限が無い）。"""
    timer = threading.Timer(TIMEOUT, process.kill)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextmanager
def _started(command: list[str]) -> Iterator[Started]:
    """predict を起動し、終わりまで待ってパイプを閉じる。"""
    with subprocess.Popen(
        command,
        env=server_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        with _watchdog(process):
            yield Started(process, process.stdin, process.stdout, process.stderr)


def _feed(stdin: IO[bytes], chunks: Iterator[bytes]) -> None:
    """標準入力へ書いて閉じる（predict が先に終われば終了コードで分かる）。"""
    with contextlib.suppress(BrokenPipeError):
        for chunk in chunks:
            stdin.write(chunk)
        stdin.close()


def _rows(rows: int) -> Iterator[bytes]:
    block = _block()
    for start in range(0, rows, BLOCK_ROWS):
        size = min(BLOCK_ROWS, rows - start)
        yield block if size == BLOCK_ROWS else block.splitlines(True)[0] * size


def run_predict(rows: int) -> Finished:
    """rows 行を標準入力へ流し、標準出力の行を数えながら predict を最後まで実行する。"""
    counted = [0]
    stderr: list[bytes] = []
    with _started(MEASURED) as started:

        def drain() -> None:
            while data := started.stdout.read(1 << 16):
                counted[0] += data.count(b"\n")

        threads = [
            threading.Thread(target=_feed, args=(started.stdin, _rows(rows))),
            threading.Thread(target=drain),
            threading.Thread(target=lambda: stderr.append(started.stderr.read())),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        code = started.process.wait(timeout=TIMEOUT)
    text = b"".join(stderr)
    peak = re.search(rb"^VmHWM:\s+(\d+) kB$", text, re.M)
    assert peak is not None, text.decode()
    return Finished(code, int(peak[1]) * 1024, counted[0], text)


def test_memory_stays_bounded_on_two_million_rows(pytestconfig: pytest.Config) -> None:
    small = run_predict(1)
    large = run_predict(LARGE_ROWS)
    assert small.code == 0, small.stderr.decode()
    assert large.code == 0, large.stderr.decode()
    assert (small.lines, large.lines) == (2, LARGE_ROWS + 1)  # 見出し行 + 全行
    record = figure_recorder(pytestconfig, "batch scoring (predict)")
    record(
        f"peak RSS: 1 row {small.peak_rss / 2**20:.0f} MiB, {LARGE_ROWS:,} rows "
        f"{large.peak_rss / 2**20:.0f} MiB (bound: 1-row peak + {RSS_MARGIN_BYTES // 2**20} MiB)"
    )
    assert large.peak_rss < small.peak_rss + RSS_MARGIN_BYTES


def test_closed_pipe_ends_quietly() -> None:
    """`predict big.csv | head -1` のように読み手が先に終わっても、トレースバックを出さない。"""
    with _started(PREDICT) as started:
        writer = threading.Thread(target=_feed, args=(started.stdin, _rows(200_000)))
        writer.start()
        first = started.stdout.readline()
        started.stdout.close()
        writer.join(timeout=TIMEOUT)
        code = started.process.wait(timeout=TIMEOUT)
        text = started.stderr.read().decode()
    assert first.startswith(b"label,")
    assert code == 141, text
    assert "Traceback" not in text
