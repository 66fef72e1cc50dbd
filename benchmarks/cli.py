"""ベンチマーク本体：floor・textbook・ours を同じ条件で順に起動し、wrk で同じ負荷をかける。

    uv run --frozen python -m benchmarks --quick    # 約 3 分
    uv run --frozen python -m benchmarks            # 全部（約 15 分）

ここは引数の解釈と結果の出力だけ。起動と停止は processes、計測は measure、環境の情報は environment。
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import grpc_load, protocols, report, wrk
from benchmarks.environment import find_uv, gunicorn_worker_class, metadata
from benchmarks.heavy_model import write_mlp
from benchmarks.measure import FULL, QUICK, Plan, Runner
from benchmarks.sink import LocalSink
from benchmarks.variants import (
    GRPC,
    LOAD_GROUPS,
    LOADS,
    PROTOCOL_POINTS,
    ROOT,
    V2,
    VARIANTS,
    Variant,
    available,
    baseline_variant,
    settings_fields,
    textbook_model,
)


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
        "--loads",
        help="測る負荷か負荷の組（既定: seed）。組: "
        f"{', '.join(LOAD_GROUPS)}（protocols は gRPC と V2 REST を同じ行数・接続数で）。"
        f"負荷: {','.join(ld.key for ld in LOADS)}",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk のスレッド数")
    parser.add_argument(
        "--grpc-client",
        choices=grpc_load.CLIENTS,
        default="auto",
        help="gRPC の負荷クライアント（auto: h2load があれば h2load、無ければ Python）",
    )
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
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="git の REF 時点の src も baseline として測る（変更の前後を同じ回で比べる）",
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    """引数から段取りを作る。"""
    plan = QUICK if args.quick else FULL
    # 既定：quick はシード API だけ、全部のときは重い MLP（適応バッチと peer）も
    names = args.loads.split(",") if args.loads else ["seed"] if args.quick else ["seed", "heavy"]
    loads = tuple(key for name in names for key in LOAD_GROUPS.get(name, (name,)))
    unknown = set(loads) - {ld.key for ld in LOADS}
    if unknown:
        raise SystemExit(f"unknown loads: {sorted(unknown)}")
    plan = replace(plan, loads=loads, threads=args.threads, grpc_client=args.grpc_client)
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
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        if any("{otlp_endpoint}" in value for v in variants for value in v.env.values()):
            # トレースありの variant の送り先：受けて捨てる OTLP/HTTP の受け口（ハーネスのスレッド）
            values["otlp_endpoint"] = stack.enter_context(LocalSink()).url
        if any("{mlp_model}" in value for v in variants for value in v.env.values()):
            values["mlp_model"] = str(write_mlp(Path(tmp) / "mlp.onnx"))
        if args.baseline:
            src = extract_src(args.baseline, Path(tmp) / "baseline")
            values["baseline_src"] = str(src)
            grpc = (src / "model_in_image" / "api" / "grpc_v2").is_dir()
            variants.insert(0, baseline_variant(args.baseline, grpc=grpc))
        scripts = {}
        for load in LOADS:
            if load.api == GRPC:  # gRPC は wrk でなく benchmarks.grpc_load で送る
                continue
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
        if any(key.startswith(f"{GRPC}-") for key in plan.loads):
            print(f"gRPC load client: {grpc_load.chosen(plan.grpc_client)}")
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


def protocol_pairs() -> list[tuple[str, int, str, str]]:
    """（説明, 行数, V2 REST の負荷, gRPC の負荷）：同じ行数・同時接続数の組。"""
    return [
        (f"{rows} row(s), c={conns}", rows, f"{V2}-r{rows}-c{conns}", f"{GRPC}-r{rows}-c{conns}")
        for rows, conns in PROTOCOL_POINTS
    ]


def extract_src(ref: str, target: Path) -> Path:
    """git archive で REF の src/ を target に書き出し、import パスにする場所を返す。"""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"git archive {ref} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


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
    pairs = protocols.pairs_of(samples, protocol_pairs())
    if pairs:
        print("\ngRPC vs V2 REST (JSON), same rows and concurrency (ratios per repeat):")
        print(protocols.render_protocols(pairs))
        print(protocols.render_targets(pairs))
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
