"""gRPC のサーバーの形を比べる：grpc.aio（uvloop）と同期の grpc.server（スレッドプール）。

本実装と同じ仕事の骨組み（ModelInferRequest の解析、raw_input_contents の np.frombuffer、前もって
直列化した応答）だけを持つ最小のサーバーを、形ごとに別プロセスで起動し、h2load で同じ負荷を
交互にかけて、サーバーの CPU µs/呼び出し（/proc の utime + stime の差 ÷ 呼び出し数）と req/s を
出す。推論・検証・メトリクスを含まない、gRPC の枠組みそのものの費用（床）。127.0.0.1 だけ。

    uv run --frozen python -m benchmarks.grpc_models --rounds 3 --seconds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent import futures
from typing import Any

from benchmarks import grpc_load, h2load, procstat
from benchmarks.processes import free_port
from benchmarks.variants import ROOT

MODELS = ("aio", "sync-2", "sync-8")
START_TIMEOUT = 30.0


def response_bytes() -> bytes:
    """確率（FP32 [1, 3]）とラベル（BYTES [1]）の raw の応答（grpc_load.check が通る形）。"""
    import numpy as np

    from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse(model_name=grpc_load.MODEL, model_version="1")
    response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 3])
    response.outputs.add(name="label", datatype="BYTES", shape=[1])
    response.raw_output_contents.append(np.array([[0.9, 0.05, 0.05]], "<f4").tobytes())
    response.raw_output_contents.append(b"\x06\x00\x00\x00setosa")
    return response.SerializeToString()


def serve(model: str, port: int) -> None:
    """最小のサーバーを動かし続ける（親が SIGTERM で止める）。"""
    import grpc
    import numpy as np

    from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb

    answer = response_bytes()

    def work(raw: bytes) -> bytes:
        request = pb.ModelInferRequest.FromString(raw)
        np.frombuffer(request.raw_input_contents[0], dtype="<f4")
        return answer

    def sync_call(raw: bytes, context: Any) -> bytes:
        return work(raw)

    async def aio_call(raw: bytes, context: Any) -> bytes:
        return work(raw)

    class Table(grpc.GenericRpcHandler):
        def __init__(self, behavior: Any) -> None:
            self.handler = grpc.unary_unary_rpc_method_handler(behavior)

        def service(self, handler_call_details: Any) -> Any:
            return self.handler

    address = f"127.0.0.1:{port}"
    if model == "aio":
        import uvloop

        async def main() -> None:
            server = grpc.aio.server(handlers=[Table(aio_call)])
            server.add_insecure_port(address)
            await server.start()
            await server.wait_for_termination()

        uvloop.run(main())
        return
    threads = int(model.split("-")[1])
    server = grpc.server(futures.ThreadPoolExecutor(threads), handlers=[Table(sync_call)])
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


def start(model: str) -> tuple[subprocess.Popen[bytes], str]:
    """1 つの形を起動し、応答するまで待つ。"""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.grpc_models", "--serve", model, "--port", str(port)]
    process = subprocess.Popen(argv, cwd=ROOT)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            grpc_load.check(target, 1)
            return process, target
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"{model} did not start on {target}") from None
            time.sleep(0.2)


def measure(
    h2: str, process: subprocess.Popen[bytes], target: str, connections: int, seconds: int
) -> tuple[float, float]:
    """(req/s, サーバーの CPU µs/呼び出し)。"""
    before = procstat.read_sample(process.pid)
    result = h2load.run(
        h2,
        f"http://{target}{grpc_load.METHOD}",
        grpc_load.request_bytes(1),
        connections=connections,
        seconds=seconds,
    )
    after = procstat.read_sample(process.pid)
    assert before is not None
    assert after is not None
    cpu = procstat.ticks_to_seconds(after.own_ticks - before.own_ticks)
    return result.rps, 1e6 * cpu / max(result.requests, 1)


def main(argv: Sequence[str] | None = None) -> int:
    """エントリポイント：形ごとの中央値の表を出す。"""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_models", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--serve", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    h2 = h2load.find()
    if h2 is None:
        raise SystemExit("h2load not found: install it (Debian/Ubuntu: nghttp2-client)")
    servers = {model: start(model) for model in MODELS}
    figures: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for _ in range(args.rounds):
            for connections in (1, 64):
                for model, (process, target) in servers.items():
                    point = measure(h2, process, target, connections, args.seconds)
                    figures.setdefault((model, connections), []).append(point)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=15)
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, {args.rounds} rounds")
    print("| server | c | req/s | server CPU µs/call |")
    print("|---|---:|---:|---:|")
    for (model, connections), points in sorted(figures.items(), key=lambda kv: kv[0][::-1]):
        rps = statistics.median(p[0] for p in points)
        cpu = statistics.median(p[1] for p in points)
        print(f"| {model} | {connections} | {rps:,.0f} | {cpu:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
