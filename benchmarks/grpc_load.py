"""gRPC の負荷クライアントと結果の解析：h2load（C、既定）か asyncio + grpc.aio（予備）。

ghz は PyPI・npm・Debian のどれからも入らない。既定は h2load（benchmarks.h2load、nghttp2 の C の
負荷ツール）：1 RPC あたりのクライアントの CPU が小さく、2 コアのマシンでもクライアントが律速
しない。h2load が無ければ（または --grpc-client python）この小さな Python のクライアントで送る
（1 RPC に 170〜300 µs の CPU を使うので、req/s はクライアントにも押さえられる）。
どちらも wrk と同じく別プロセスで動かし（その CPU はクライアントの分として数える）、接続数 =
同時リクエスト数（wrk の -c と同じ）、リクエストは前もって直列化した同じバイト列（tritonclient と
同じ raw_input_contents）。応答は解析しない（状態コードだけを見る）。Python のクライアントの
結果は 1 行の JSON（MARKER で始まる）で返す。

    python -m benchmarks.grpc_load --target 127.0.0.1:8081 --rows 64 --connections 64 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from array import array
from collections import Counter
from collections.abc import Sequence
from time import perf_counter
from typing import Any

import numpy as np

from benchmarks import h2load
from benchmarks.variants import ROOT, SPECIES_ROWS
from benchmarks.wrk import WrkResult, marked_json

MARKER = "GRPC_LOAD_JSON "
METHOD = "/inference.GRPCInferenceService/ModelInfer"
MODEL = "iris_svc"
CALL_TIMEOUT = 5.0
MAX_SECONDS = 600
MAX_CONNECTIONS = 1024
# 接続の確立と最初の呼び出しを計測から外す時間（秒）
SETTLE_SECONDS = 0.3
# --grpc-client の選択肢：auto は h2load があれば h2load、無ければ python
CLIENTS = ("auto", "h2load", "python")


def request_bytes(rows: int, model: str = MODEL) -> bytes:
    """3 品種を巡回する rows 行の ModelInferRequest（raw_input_contents、FP32）。"""
    from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb

    data = np.array([SPECIES_ROWS[i % len(SPECIES_ROWS)] for i in range(rows)], dtype="<f4")
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=[rows, data.shape[1]])
    request.raw_input_contents.append(data.tobytes())
    return request.SerializeToString()


def check(target: str, rows: int) -> str:
    """1 回送り、OK と出力 2 つ（確率とラベル）を確かめる（応答の要約を返す）。"""
    import grpc

    from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        raw = call(request_bytes(rows), timeout=CALL_TIMEOUT)
    response = pb.ModelInferResponse.FromString(raw)
    names = [output.name for output in response.outputs]
    if names != ["probabilities", "label"] or len(response.raw_output_contents) != 2:
        raise RuntimeError(f"unexpected gRPC response from {target}: {response}")
    return f"gRPC {METHOD}: outputs {names}, raw {len(raw)} bytes"


async def _load(target: str, body: bytes, connections: int, seconds: float) -> dict[str, Any]:
    """connections 本の接続で 1 本ずつ送り続ける（計測は SETTLE_SECONDS 後から seconds 秒）。"""
    import grpc

    # 同じ宛先でも接続を分ける（既定ではチャネルどうしが 1 本の接続を共有する）
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    calls = [channel.unary_unary(METHOD) for channel in channels]
    latencies: array[float] = array("d")
    errors: Counter[str] = Counter()
    begin = perf_counter() + SETTLE_SECONDS
    end = begin + seconds
    last = [begin]

    async def user(call: Any) -> None:
        while True:
            start = perf_counter()
            if start >= end:
                return
            try:
                await call(body, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                if start >= begin:
                    errors[exc.code().name] += 1
                continue
            done = perf_counter()
            if start >= begin:
                latencies.append(done - start)
                last[0] = max(last[0], done)

    try:
        await asyncio.gather(*(user(call) for call in calls))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return summarize(latencies, errors, last[0] - begin)


def summarize(latencies: Sequence[float], errors: Counter[str], duration: float) -> dict[str, Any]:
    """wrk の done() と同じ項目の集計（時間は µs）。"""
    values = np.asarray(latencies, dtype=np.float64) * 1e6
    stats = {"mean": 0.0, "max": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    if values.size:
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        stats = {
            "mean": float(values.mean()),
            "max": float(values.max()),
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
        }
    return {
        "requests": int(values.size),
        "duration_us": int(max(duration, 0.0) * 1e6),
        "errors": dict(errors),
        "latency_us": stats,
    }


def parse_output(stdout: str) -> WrkResult:
    """クライアントの出力から MARKER の行を取り出し、wrk と同じ形の結果にする。"""
    data = marked_json(stdout, MARKER, "gRPC load client")
    errors: dict[str, int] = data["errors"]
    latency = data["latency_us"]
    transport = sum(n for code, n in errors.items() if code in ("UNAVAILABLE", "CANCELLED"))
    timeouts = errors.get("DEADLINE_EXCEEDED", 0)
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        socket_errors=transport + timeouts,
        non_2xx=sum(errors.values()) - transport - timeouts,
        timeouts=timeouts,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
    )


def command(target: str, *, rows: int, connections: int, seconds: int) -> list[str]:
    """クライアントのコマンドライン（この仮想環境の python で別プロセスとして動かす）。"""
    return [
        sys.executable,
        "-m",
        "benchmarks.grpc_load",
        "--target",
        target,
        "--rows",
        str(rows),
        "--connections",
        str(connections),
        "--seconds",
        str(seconds),
    ]


def chosen(client: str = "auto") -> str:
    """実際に使うクライアントの名前（h2load か python）。h2load を指定して無ければ失敗する。"""
    if client not in CLIENTS:
        raise ValueError(f"unknown gRPC load client {client!r} (choose from {', '.join(CLIENTS)})")
    if client == "python":
        return client
    if h2load.find() is None:
        if client == "h2load":
            raise RuntimeError("h2load not found: install it (Debian/Ubuntu: nghttp2-client)")
        return "python"
    return "h2load"


def run(
    target: str, *, rows: int, connections: int, seconds: int, client: str = "auto"
) -> WrkResult:
    """クライアントを 1 回実行する（wrk.run と同じ役割）。"""
    if chosen(client) == "h2load":
        path = h2load.find()
        assert path is not None
        url = f"http://{target}{METHOD}"
        body = request_bytes(rows)
        return h2load.run(path, url, body, connections=connections, seconds=seconds)
    argv = command(target, rows=rows, connections=connections, seconds=seconds)
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"gRPC load client failed ({done.returncode}): {done.stderr[-2000:]}")
    return parse_output(done.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """エントリポイント：結果を MARKER の行で標準出力に書く。"""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_load", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT（127.0.0.1 だけ）")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not args.target.startswith("127.0.0.1:"):
        parser.error("the load client only talks to 127.0.0.1")
    if not (1 <= args.connections <= MAX_CONNECTIONS and 0 < args.seconds <= MAX_SECONDS):
        parser.error(f"connections must be 1..{MAX_CONNECTIONS}, seconds 0..{MAX_SECONDS}")
    import uvloop

    body = request_bytes(args.rows)
    result = uvloop.run(_load(args.target, body, args.connections, args.seconds))
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
