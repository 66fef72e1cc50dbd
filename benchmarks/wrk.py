"""wrk の実行と結果の解析（POST ボディは Lua スクリプトで送る）。"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "WRK_JSON "

# done() で集計を 1 行の JSON として書き出す（テキスト出力の解析に頼らない）
_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[@BODY@]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '@MARKER@{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%.1f,"p50":%.1f,"p90":%.1f,"p99":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """1 回の wrk の結果。"""

    requests: int
    duration_s: float
    socket_errors: int
    non_2xx: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """1 秒あたりの完了リクエスト数。"""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        """失敗の合計（ソケットエラー + 2xx 以外）。"""
        return self.socket_errors + self.non_2xx


def lua_script(body: str) -> str:
    """POST ボディを埋め込んだ Lua スクリプト。"""
    if "]==]" in body:
        raise ValueError("body must not contain the Lua long-string terminator")
    return _LUA.replace("@BODY@", body).replace("@MARKER@", MARKER)


def marked_json(stdout: str, marker: str, tool: str) -> Any:
    """標準出力から marker で始まる 1 行の JSON を取り出す（負荷をかける道具に共通）。"""
    for line in stdout.splitlines():
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    raise ValueError(f"no {marker.strip()} line in {tool} output:\n{stdout[-2000:]}")


def parse_output(stdout: str) -> WrkResult:
    """wrk の標準出力から done() の JSON 行を取り出して解析する。"""
    data = marked_json(stdout, MARKER, "wrk")
    errors, latency = data["errors"], data["latency_us"]
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        non_2xx=int(errors["status"]),
        timeouts=int(errors["timeout"]),
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
    )


def find_wrk() -> str:
    """wrk の実行ファイル（無ければ導入方法を添えて失敗する）。"""
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk not found: install it (Debian/Ubuntu: apt-get install wrk)")
    return path


def command(
    wrk: str, url: str, script: Path, *, connections: int, seconds: int, threads: int = 1
) -> list[str]:
    """wrk のコマンドライン。"""
    return [
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def run(
    wrk: str, url: str, script: Path, *, connections: int, seconds: int, threads: int = 1
) -> WrkResult:
    """wrk を 1 回実行する。"""
    argv = command(wrk, url, script, connections=connections, seconds=seconds, threads=threads)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_output(done.stdout)
