"""計測の段取り（Plan）と実行：1 点の計測、Sample への変換、反復の回し方。

反復はサーバー単位で交互（A,B,C,A,B,C）。
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import grpc_load, procstat, report, wrk
from benchmarks.processes import (
    HOST,
    Server,
    ServerStartError,
    check_response,
    free_port,
    request,
    server_env,
)
from benchmarks.variants import (
    GRPC,
    GRPC_MODEL_INFER,
    IRIS,
    LOADS,
    Load,
    Variant,
    expand,
    loads_for,
)

MB = 1024 * 1024
BATCH_ROWS = "model_in_image_inference_batch_rows"
REQUESTS_TOTAL = "model_in_image_requests_total{"
WARMUP = next(ld for ld in LOADS if ld.key == "c64")


@dataclass(frozen=True, slots=True)
class Plan:
    """計測の段取り。"""

    quick: bool
    seconds: int
    warmup_session: int
    warmup_point: int
    repeats: int
    workers: tuple[int, ...]
    loads: tuple[str, ...]
    threads: int = 1
    # gRPC の負荷クライアント（grpc_load.CLIENTS：auto は h2load があれば h2load）
    grpc_client: str = "auto"
    # 各サーバーの起動前に、マシン全体の CPU 使用率がこれ未満になるまで待つ（0 で待たない）
    idle_pct: float = 30.0
    idle_wait_s: float = 30.0

    def estimate_seconds(self, variants: Sequence[Variant]) -> float:
        """おおよその所要時間（起動・停止・待機を 4 秒と見積もる）。"""
        total = 0.0
        for workers in self.workers:
            for variant in variants:
                points = loads_for(variant, self.loads, quick=self.quick, workers=workers)
                if points:
                    total += 4 + self.warmup_session
                    total += len(points) * (self.warmup_point + self.seconds)
        return total * self.repeats


QUICK = Plan(
    quick=True, seconds=2, warmup_session=1, warmup_point=0, repeats=2, workers=(1, 2), loads=()
)
FULL = Plan(
    quick=False, seconds=5, warmup_session=2, warmup_point=1, repeats=3, workers=(1, 2), loads=()
)


@dataclass(frozen=True, slots=True)
class Measured:
    """1 点の計測値（wrk の結果とプロセスツリー・マシン全体の CPU）。"""

    result: wrk.WrkResult
    server_cpu_s: float
    wrk_cpu_s: float
    machine_cpu_s: float
    machine_capacity_s: float
    busy: list[procstat.ProcSample]
    tree: dict[int, procstat.ProcSample]
    batch_rows: float = float("nan")

    @property
    def foreign_pct(self) -> float:
        """サーバーと wrk 以外が使った CPU（全コアに対する %）：計測の雑音の目安。"""
        if self.machine_capacity_s <= 0:
            return 0.0
        other = self.machine_cpu_s - self.server_cpu_s - self.wrk_cpu_s
        return max(0.0, 100 * other / self.machine_capacity_s)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generate(
    server: Server, load: Load, script: Path | None, plan: Plan, wrk_path: str, seconds: int
) -> wrk.WrkResult:
    """負荷をかける：HTTP は wrk、gRPC は benchmarks.grpc_load（どちらも別プロセス）。"""
    if load.api == GRPC:
        target = f"{HOST}:{server.grpc_port}"
        client = grpc_load.chosen(plan.grpc_client)
        failed = grpc_failures(server) if client == "h2load" else 0
        result = grpc_load.run(
            target, rows=load.rows, connections=load.connections, seconds=seconds, client=client
        )
        if client == "h2load":  # h2load は HTTP の 200 しか見ない：gRPC の状態はサーバーで数える
            result = replace(result, non_2xx=result.non_2xx + grpc_failures(server) - failed)
        return result
    assert script is not None, load.key
    url = f"http://{HOST}:{server.port}{load.path}"
    return wrk.run(
        wrk_path, url, script, connections=load.connections, seconds=seconds, threads=plan.threads
    )


def grpc_failures(server: Server) -> int:
    """/metrics の ModelInfer の OK 以外の数（h2load は gRPC の状態を見ないので、サーバーで）。"""
    try:
        status, body = request(server.port, "GET", "/metrics")
    except OSError:
        return 0
    if status != 200:
        return 0
    route = f'route="{GRPC_MODEL_INFER}"'
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(REQUESTS_TOTAL) and route in line and 'status="200"' not in line:
            total += float(line.rpartition(" ")[2])
    return int(total)


def batch_totals(server: Server) -> tuple[float, float]:
    """/metrics の推論の行数の (合計, 回数)。/metrics の無いサーバーは (nan, nan)。"""
    try:
        status, body = request(server.port, "GET", "/metrics")
    except OSError:
        return float("nan"), float("nan")
    totals = {"sum": float("nan"), "count": float("nan")}
    if status == 200:
        for line in body.decode().splitlines():
            name, _, number = line.partition(" ")
            for suffix in totals:
                if name == f"{BATCH_ROWS}_{suffix}":
                    totals[suffix] = float(number)
    return totals["sum"], totals["count"]


def measure(server: Server, load: Load, script: Path | None, plan: Plan, wrk_path: str) -> Measured:
    """1 点を計測する：負荷の前後でプロセスツリーとマシン全体の CPU 時間を読む。"""
    if plan.warmup_point:
        generate(server, load, script, plan, wrk_path, plan.warmup_point)
    rows_before, runs_before = batch_totals(server)
    before = procstat.snapshot(server.pid)
    machine_before, children_before = procstat.system_ticks(), _children_cpu_s()
    result = generate(server, load, script, plan, wrk_path, plan.seconds)
    machine_after, children_after = procstat.system_ticks(), _children_cpu_s()
    after = procstat.snapshot(server.pid)
    rows_after, runs_after = batch_totals(server)
    runs = runs_after - runs_before
    server_ticks = procstat.total_ticks(after) - procstat.total_ticks(before)
    return Measured(
        result=result,
        server_cpu_s=procstat.ticks_to_seconds(server_ticks),
        wrk_cpu_s=children_after - children_before,
        machine_cpu_s=procstat.ticks_to_seconds(machine_after[0] - machine_before[0]),
        machine_capacity_s=procstat.ticks_to_seconds(machine_after[1] - machine_before[1]),
        busy=procstat.busy_processes(before, after),
        tree=after,
        batch_rows=(rows_after - rows_before) / runs if runs > 0 else float("nan"),
    )


def to_sample(variant: str, workers: int, load: Load, repeat: int, m: Measured) -> report.Sample:
    """計測値を Sample にする。"""
    rss_busy = [p.rss_bytes for p in m.busy] or [p.rss_bytes for p in m.tree.values()]
    requests = m.result.requests
    per_request = 1e6 / requests if requests else float("nan")
    return report.Sample(
        variant=variant,
        workers=workers,
        load=load.key,
        repeat=repeat,
        rps=m.result.rps,
        p50_ms=m.result.p50_ms,
        p99_ms=m.result.p99_ms,
        requests=requests,
        errors=m.result.errors,
        cpu_us_per_req=m.server_cpu_s * per_request,
        rss_worker_mb=sum(rss_busy) / len(rss_busy) / MB,
        rss_total_mb=sum(p.rss_bytes for p in m.tree.values()) / MB,
        busy_processes=len(m.busy),
        wrk_cpu_us_per_req=m.wrk_cpu_s * per_request,
        foreign_cpu_pct=m.foreign_pct,
        batch_rows=m.batch_rows,
    )


@dataclass
class Runner:
    """全体の段取りを実行する。"""

    plan: Plan
    variants: list[Variant]
    values: dict[str, str]
    settings_env: tuple[str, ...]
    wrk_path: str
    scripts: dict[str, Path]
    failures: list[str]
    samples: list[report.Sample]

    def session(self, variant: Variant, workers: int, repeat: int) -> None:
        """1 サーバーを起動し、その variant の負荷を全部測って止める（結果は samples に足す）。"""
        loads = loads_for(variant, self.plan.loads, quick=self.plan.quick, workers=workers)
        if not loads:
            return
        if self.plan.idle_pct > 0:
            idle = procstat.wait_for_idle(self.plan.idle_pct, self.plan.idle_wait_s)
            if idle >= self.plan.idle_pct:
                print(f"  ~ machine {idle:.0f} % busy before {variant.name}; measuring anyway")
        port = free_port()
        grpc_port = free_port()
        while grpc_port == port:
            grpc_port = free_port()
        values = {
            **self.values,
            "port": str(port),
            "grpc_port": str(grpc_port),
            "workers": str(workers),
        }
        argv = [expand(a, values) for a in variant.argv]
        env = server_env(variant, values, self.settings_env)
        with Server(variant, argv, env, port, grpc_port) as server:
            for load in loads:
                check_response(server, load)
            # 全ワーカーが起動して温まるまで、1 行・64 接続で負荷をかけて捨てる
            warmup = WARMUP if variant.model == IRIS else next(ld for ld in loads if ld.api != GRPC)
            url = f"http://{HOST}:{port}{warmup.path}"
            script = self.scripts[warmup.key]
            wrk.run(self.wrk_path, url, script, connections=64, seconds=self.plan.warmup_session)
            for load in loads:
                script = self.scripts.get(load.key)
                measured = measure(server, load, script, self.plan, self.wrk_path)
                sample = to_sample(variant.name, workers, load, repeat, measured)
                self.samples.append(sample)
                print(_progress(sample, load), flush=True)
                if sample.errors:
                    print(
                        f"    ! {sample.errors} errors; server log tail:\n{server.log_tail(800)}",
                        flush=True,
                    )

    def run(self) -> list[report.Sample]:
        """反復 → ワーカー数 → variant の順に回す（サーバーが交互になる）。"""
        for repeat in range(self.plan.repeats):
            for workers in self.plan.workers:
                for variant in self.variants:
                    try:
                        self.session(variant, workers, repeat)
                    except (ServerStartError, RuntimeError) as exc:
                        message = f"{variant.name} workers={workers} repeat={repeat}: {exc}"
                        self.failures.append(message)
                        print(f"  ! {message}", file=sys.stderr, flush=True)
        return self.samples


def _progress(s: report.Sample, load: Load) -> str:
    return (
        f"  r{s.repeat} w{s.workers} {s.variant:<15} {load.label:<14} {s.rps:>9,.0f} req/s"
        f"  p50 {s.p50_ms:6.2f} ms  p99 {s.p99_ms:6.2f} ms  {s.cpu_us_per_req:6.1f} µs/req"
        f"  rss {s.rss_worker_mb:4.0f} MB x{s.busy_processes}  other {s.foreign_cpu_pct:3.0f} %"
        f"  rows/run {s.batch_rows:5.1f}"
    )
