"""ベンチマーク本体：floor・textbook・ours を同じ条件で順に起動し、wrk で同じ負荷をかける。

    uv run --frozen python -m benchmarks --quick    # 約 3 分
    uv run --frozen python -m benchmarks            # 全部（約 15 分）

反復はサーバー単位で交互（A,B,C,A,B,C）。起動したプロセスはプロセスグループ単位で止める。
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata as pkg_metadata
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from benchmarks import procstat, report, wrk
from benchmarks.variants import (
    LOADS,
    ROOT,
    VARIANTS,
    Load,
    Variant,
    available,
    expand,
    loads_for,
    settings_fields,
    textbook_model,
)

HOST = "127.0.0.1"
MB = 1024 * 1024
STARTUP_SECONDS = 120.0
STOP_SECONDS = 15.0
WARMUP = next(ld for ld in LOADS if ld.key == "c64")
# 起動スクリプトや利用者の環境から漏れると条件が変わる変数（run.sh と Settings の名前）
_SCRUB = (
    "HOST",
    "PORT",
    "WORKERS",
    "UVICORN_WORKER",
    "LOGLEVEL",
    "LOGCONFIG",
    "BACKLOG",
    "LIMIT_MAX_REQUESTS",
    "MAX_REQUESTS_JITTER",
    "GRACEFUL_TIMEOUT",
    "APP_NAME",
    "GUNICORN_CMD_ARGS",
    "FLOOR_MODEL",
)


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


class ServerStartError(RuntimeError):
    """サーバーが起動しなかった。"""


def free_port() -> int:
    """127.0.0.1 の空きポート。"""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    """1 リクエストを送る（127.0.0.1 だけ）。"""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def server_env(
    variant: Variant, values: Mapping[str, str], settings_env: Sequence[str]
) -> dict[str, str]:
    """利用者の環境から条件を変える変数を除き、variant の変数を足す。"""
    scrub = {*_SCRUB, *settings_env}
    env = {k: v for k, v in os.environ.items() if k not in scrub}
    env.update({k: expand(v, values) for k, v in variant.env.items()})
    return env


class Server:
    """variant を 1 つ起動し、終了時にプロセスグループごと止める。"""

    def __init__(self, variant: Variant, argv: list[str], env: dict[str, str], port: int) -> None:
        self.variant = variant
        self.argv = argv
        self.env = env
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """ルートプロセスの pid（= プロセスグループ id）。"""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Server:
        self.log = tempfile.TemporaryFile()  # stop() で閉じる
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.variant.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, limit: int = 3000) -> str:
        """サーバーの出力の末尾。"""
        if self.log is None:
            return ""
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - limit))
        return self.log.read().decode("utf-8", "replace")

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.variant.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if request(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServerStartError(
            f"{self.variant.name} not ready in {STARTUP_SECONDS:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM をグループに送り、待っても終わらなければ SIGKILL。"""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session=True なのでグループ id = pid
        self._signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._signal_group(pgid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_SECONDS)
        # 親が先に終わってもワーカーが残っていれば止める
        deadline = time.monotonic() + STOP_SECONDS
        while self._group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._group_alive(pgid):
            self._signal_group(pgid, signal.SIGKILL)
        if self.log is not None:
            self.log.close()
            self.log = None
        self.proc = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_for_idle(threshold_pct: float, max_wait_s: float, sample_s: float = 0.5) -> float:
    """マシン全体の CPU 使用率が閾値未満になるまで待ち、最後に測った値を返す。"""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = procstat.system_ticks()
        time.sleep(sample_s)
        busy = procstat.busy_percent(before, procstat.system_ticks())
        if threshold_pct <= 0 or busy < threshold_pct or time.monotonic() >= deadline:
            return busy


def check_response(port: int, load: Load) -> str:
    """計測前に 1 回送り、200 と prediction を確かめる（応答の先頭を返す）。"""
    status, body = request(port, "POST", load.path, load.body())
    if status != 200 or "prediction" not in json.loads(body):
        raise ServerStartError(f"POST {load.path} returned {status}: {body[:300]!r}")
    return body[:120].decode("utf-8", "replace")


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


def measure(server: Server, load: Load, script: Path, plan: Plan, wrk_path: str) -> Measured:
    """1 点を計測する：wrk の前後でプロセスツリーとマシン全体の CPU 時間を読む。"""
    url = f"http://{HOST}:{server.port}{load.path}"
    options = {"connections": load.connections, "threads": plan.threads}
    if plan.warmup_point:
        wrk.run(wrk_path, url, script, seconds=plan.warmup_point, **options)
    before = procstat.snapshot(server.pid)
    machine_before, children_before = procstat.system_ticks(), _children_cpu_s()
    result = wrk.run(wrk_path, url, script, seconds=plan.seconds, **options)
    machine_after, children_after = procstat.system_ticks(), _children_cpu_s()
    after = procstat.snapshot(server.pid)
    server_ticks = procstat.total_ticks(after) - procstat.total_ticks(before)
    return Measured(
        result=result,
        server_cpu_s=procstat.ticks_to_seconds(server_ticks),
        wrk_cpu_s=children_after - children_before,
        machine_cpu_s=procstat.ticks_to_seconds(machine_after[0] - machine_before[0]),
        machine_capacity_s=procstat.ticks_to_seconds(machine_after[1] - machine_before[1]),
        busy=procstat.busy_processes(before, after),
        tree=after,
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
            idle = wait_for_idle(self.plan.idle_pct, self.plan.idle_wait_s)
            if idle >= self.plan.idle_pct:
                print(f"  ~ machine {idle:.0f} % busy before {variant.name}; measuring anyway")
        port = free_port()
        values = {**self.values, "port": str(port), "workers": str(workers)}
        argv = [expand(a, values) for a in variant.argv]
        env = server_env(variant, values, self.settings_env)
        with Server(variant, argv, env, port) as server:
            check_response(port, loads[0])
            # 全ワーカーが起動して温まるまで、1 行・64 接続で負荷をかけて捨てる
            url = f"http://{HOST}:{port}{WARMUP.path}"
            script = self.scripts[WARMUP.key]
            wrk.run(self.wrk_path, url, script, connections=64, seconds=self.plan.warmup_session)
            for load in loads:
                measured = measure(server, load, self.scripts[load.key], self.plan, self.wrk_path)
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
    )


def gunicorn_worker_class() -> str:
    """uvicorn-worker パッケージが有ればそれ、無ければ uvicorn 同梱（非推奨）の worker。"""
    return (
        "uvicorn_worker.UvicornWorker"
        if find_spec("uvicorn_worker")
        else "uvicorn.workers.UvicornWorker"
    )


def find_uv(explicit: str | None) -> str:
    """uv の実行ファイル（--uv、環境変数 UV、PATH の順）。"""
    for candidate in (explicit, os.environ.get("UV"), shutil.which("uv")):
        if candidate and (shutil.which(candidate) or Path(candidate).exists()):
            return str(Path(shutil.which(candidate) or candidate).resolve())
    raise RuntimeError("uv not found: pass --uv PATH (make bench passes $(UV))")


def _versions() -> dict[str, str]:
    names = (
        "uvicorn",
        "fastapi",
        "starlette",
        "pydantic",
        "gunicorn",
        "onnxruntime",
        "numpy",
        "orjson",
        "uvloop",
        "httptools",
    )
    out = {}
    for name in names:
        try:
            out[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _wrk_version(path: str) -> str:
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    return (
        (done.stdout or done.stderr).splitlines()[0].strip()
        if (done.stdout or done.stderr)
        else "?"
    )


def metadata(plan: Plan, runner: Runner, command: list[str]) -> dict[str, Any]:
    """結果 JSON の meta（環境・版・段取り）。"""
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "plan": asdict(plan),
        "host": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "versions": {**_versions(), "wrk": _wrk_version(runner.wrk_path)},
        "git": {
            "commit": _git("rev-parse", "HEAD"),
            "src_dirty": bool(_git("status", "--porcelain", "src")),
        },
        "variants": [
            {
                "name": v.name,
                "description": v.description,
                "argv": list(v.argv),
                "env": dict(v.env),
                "cwd": str(v.cwd),
            }
            for v in runner.variants
        ],
        "values": {k: v for k, v in runner.values.items() if k not in ("path",)},
        "loads": [asdict(ld) for ld in LOADS if ld.key in plan.loads],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="短い計測（約 3 分）")
    parser.add_argument("--repeats", type=int, help="各点の反復回数（2 以上）")
    parser.add_argument("--seconds", type=int, help="1 点の計測秒数（整数）")
    parser.add_argument("--workers", help="ワーカー数（例: 1,2）")
    parser.add_argument(
        "--variants", help=f"測るサーバー（既定: 全部）: {','.join(v.name for v in VARIANTS)}"
    )
    parser.add_argument(
        "--loads", help=f"測る負荷（既定: 全部）: {','.join(ld.key for ld in LOADS)}"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk のスレッド数")
    parser.add_argument(
        "--idle-pct",
        type=float,
        help="起動前にマシンの CPU 使用率がこの %% 未満になるまで最大 30 秒待つ（0 で待たない）",
    )
    parser.add_argument("--uv", help="uv の実行ファイル（ours の起動に使う）")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="結果の出力先"
    )
    parser.add_argument("--no-chart", action="store_true", help="PNG を描かない")
    parser.add_argument("--list", action="store_true", help="variant と負荷を表示して終わる")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    """引数から段取りを作る。"""
    plan = QUICK if args.quick else FULL
    loads = tuple(args.loads.split(",")) if args.loads else tuple(ld.key for ld in LOADS)
    unknown = set(loads) - {ld.key for ld in LOADS}
    if unknown:
        raise SystemExit(f"unknown loads: {sorted(unknown)}")
    plan = replace(plan, loads=loads, threads=args.threads)
    if args.repeats:
        plan = replace(plan, repeats=args.repeats)
    if args.seconds:
        plan = replace(plan, seconds=args.seconds)
    if args.idle_pct is not None:
        plan = replace(plan, idle_pct=args.idle_pct)
    if args.workers:
        plan = replace(plan, workers=tuple(int(w) for w in args.workers.split(",")))
    return plan


def select_variants(names: str | None, fields: frozenset[str]) -> tuple[list[Variant], list[str]]:
    """測る variant と、前提の設定が無くて省いた名前。"""
    wanted = names.split(",") if names else [v.name for v in VARIANTS]
    unknown = set(wanted) - {v.name for v in VARIANTS}
    if unknown:
        raise SystemExit(f"unknown variants: {sorted(unknown)}")
    chosen = [v for v in VARIANTS if v.name in wanted]
    return [v for v in chosen if available(v, fields)], [
        v.name for v in chosen if not available(v, fields)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """エントリポイント。"""
    args = parse_args(argv)
    plan = make_plan(args)
    fields = settings_fields()
    variants, skipped = select_variants(args.variants, fields)
    if args.list:
        for v in VARIANTS:
            print(f"{v.name:<16} {v.description}")
        for ld in LOADS:
            print(f"{ld.key:<16} {ld.label} POST {ld.path}")
        return 0
    model, labels = textbook_model()
    values = {
        "python": sys.executable,
        "uv": find_uv(args.uv) if any("{uv}" in a for v in variants for a in v.argv) else "uv",
        "root": str(ROOT),
        "bindir": str(Path(sys.executable).parent),
        "path": os.environ.get("PATH", ""),
        "gunicorn_worker": gunicorn_worker_class(),
        "textbook_model": str(model),
        "textbook_labels": str(labels),
    }
    settings_env = tuple(name.upper() for name in fields)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        scripts = {}
        for load in LOADS:
            scripts[load.key] = Path(tmp) / f"{load.key}.lua"
            scripts[load.key].write_text(wrk.lua_script(load.body()))
        runner = Runner(plan, variants, values, settings_env, wrk.find_wrk(), scripts, [], [])
        meta = metadata(plan, runner, ["python", "-m", "benchmarks", *(argv or sys.argv[1:])])
        mode = "quick" if plan.quick else "full"
        minutes = plan.estimate_seconds(variants) / 60
        print(
            f"mode {mode}: {len(variants)} servers × workers {plan.workers} × {plan.repeats}"
            f" repeats, {plan.seconds} s per point; about {minutes:.1f} min"
        )
        print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs; textbook model {model}")
        if skipped:
            print(f"skipped (setting not present): {', '.join(skipped)}")
        started = time.monotonic()
        try:
            samples = runner.run()
        except KeyboardInterrupt:
            print("interrupted: reporting what was measured", file=sys.stderr)
            runner.failures.append("interrupted")
            samples = runner.samples
    return finish(args, plan, meta, runner, samples, time.monotonic() - started)


def finish(
    args: argparse.Namespace,
    plan: Plan,
    meta: dict[str, Any],
    runner: Runner,
    samples: list[report.Sample],
    elapsed: float,
) -> int:
    """集計して表・JSON・PNG を出す。"""
    labels = {ld.key: ld.label for ld in LOADS}
    points = report.sort_points(
        report.aggregate(samples), [ld.key for ld in LOADS], [v.name for v in VARIANTS]
    )
    meta = {**meta, "elapsed_s": round(elapsed, 1), "failures": runner.failures}
    meta["host"]["loadavg_end"] = os.getloadavg()
    print()
    print(report.render_table(points, labels))
    print()
    print(report.render_ratios(report.ratios(points), labels))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    stem = args.out / f"bench-{'quick' if plan.quick else 'full'}-{stamp}"
    report.write_json(stem.with_suffix(".json"), meta, samples, points)
    print(f"\nresults: {stem.with_suffix('.json')}")
    if points and not args.no_chart:
        mode = "quick" if plan.quick else "full"
        title = f"model-in-image benchmark ({mode}, {os.cpu_count()} CPUs, {stamp})"
        report.draw_chart(stem.with_suffix(".png"), points, labels, title)
        print(f"chart:   {stem.with_suffix('.png')}")
    if samples:
        foreign = sorted(s.foreign_cpu_pct for s in samples)
        median = foreign[len(foreign) // 2]
        print(
            f"CPU used by other processes during the runs: median {median:.0f} %,"
            f" max {foreign[-1]:.0f} % of the machine"
        )
    print(f"elapsed {elapsed / 60:.1f} min; load average now {os.getloadavg()}")
    if runner.failures:
        print("failures:\n  " + "\n  ".join(runner.failures), file=sys.stderr)
    return 1 if runner.failures or any(p.errors for p in points) or not samples else 0
