"""gRPC と V2 REST（JSON）を同じ行数・同じ同時接続数で並べた表と、issue の目標の判定。

比はどれも同じ反復（同じサーバーの同じ回、負荷は REST と gRPC を交互に測る）の組ごとに取り、
反復の中央値と最小–最大で示す：混んだマシンでも、同じ時刻に測った 2 つを比べる。
目標：64 行の raw_input_contents で gRPC の req/s ≥ REST（c=1・c=64）、1 行の呼び出しの
サーバーの CPU が REST の 2 倍以下。
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.report import Sample, Stat, _num, _with_range

# 目標：64 行の req/s の比（gRPC/REST）の下限、1 行の CPU の比の上限
RPS_TARGET_ROWS, RPS_TARGET = 64, 1.0
CPU_TARGET_ROWS, CPU_TARGET = 1, 2.0


@dataclass(frozen=True, slots=True)
class Pair:
    """1 つの（サーバー, ワーカー数, 行数・接続数）の REST と gRPC（反復をまとめた値と比）。"""

    variant: str
    workers: int
    label: str
    rows: int
    rest_rps: Stat
    grpc_rps: Stat
    rest_cpu: Stat
    grpc_cpu: Stat
    rest_p99: Stat
    grpc_p99: Stat
    rps_ratio: Stat  # gRPC / REST（大きいほど gRPC が速い）
    cpu_ratio: Stat  # gRPC / REST（小さいほど gRPC が安い）


def pairs_of(samples: Iterable[Sample], pairs: Sequence[tuple[str, int, str, str]]) -> list[Pair]:
    """pairs は（説明, 行数, REST の負荷, gRPC の負荷）。両方を同じ反復で測った組だけを出す。"""
    index: dict[tuple[str, int, str, int], Sample] = {}
    for s in samples:
        index[(s.variant, s.workers, s.load, s.repeat)] = s
    groups = dict.fromkeys((variant, workers) for variant, workers, _, _ in index)
    result: list[Pair] = []
    for variant, workers in groups:
        for label, rows, rest_key, grpc_key in pairs:
            both = [
                (rest, grpc)
                for (v, w, load, repeat), rest in index.items()
                if (v, w, load) == (variant, workers, rest_key)
                and (grpc := index.get((variant, workers, grpc_key, repeat))) is not None
            ]
            if both:
                result.append(_pair(variant, workers, label, rows, both))
    return result


def _pair(
    variant: str, workers: int, label: str, rows: int, both: list[tuple[Sample, Sample]]
) -> Pair:
    def stat(values: Iterable[float]) -> Stat:
        return Stat.of(list(values))

    return Pair(
        variant=variant,
        workers=workers,
        label=label,
        rows=rows,
        rest_rps=stat(r.rps for r, _ in both),
        grpc_rps=stat(g.rps for _, g in both),
        rest_cpu=stat(r.cpu_us_per_req for r, _ in both),
        grpc_cpu=stat(g.cpu_us_per_req for _, g in both),
        rest_p99=stat(r.p99_ms for r, _ in both),
        grpc_p99=stat(g.p99_ms for _, g in both),
        rps_ratio=stat(g.rps / r.rps if r.rps > 0 else float("nan") for r, g in both),
        cpu_ratio=stat(
            g.cpu_us_per_req / r.cpu_us_per_req if r.cpu_us_per_req > 0 else float("nan")
            for r, g in both
        ),
    )


def render_protocols(items: Sequence[Pair]) -> str:
    """表（Markdown）：req/s・サーバーの CPU µs/呼び出し・p99 と、gRPC/REST の比。"""
    if not items:
        return ""
    lines = [
        "| workers | server | load | REST req/s | gRPC req/s | gRPC/REST req/s "
        "| REST CPU µs/call | gRPC CPU µs/call | gRPC/REST CPU | REST p99 ms | gRPC p99 ms |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in items:
        lines.append(
            f"| {p.workers} | {p.variant} | {p.label} | {_with_range(p.rest_rps)} "
            f"| {_with_range(p.grpc_rps)} | {_with_range(p.rps_ratio, 2)}× "
            f"| {_with_range(p.rest_cpu)} | {_with_range(p.grpc_cpu)} "
            f"| {_with_range(p.cpu_ratio, 2)}× | {_with_range(p.rest_p99, 2)} "
            f"| {_with_range(p.grpc_p99, 2)} |"
        )
    return "\n".join(lines)


def render_targets(items: Sequence[Pair]) -> str:
    """目標の判定（1 行ずつ、比の中央値で判定し、外れた分も書く）。"""
    lines: list[str] = []
    for p in items:
        where = f"workers {p.workers} {p.variant} {p.label}"
        if p.rows == RPS_TARGET_ROWS:
            lines.append(_verdict(f"{where}: gRPC/REST req/s", p.rps_ratio.mid, RPS_TARGET, True))
        if p.rows == CPU_TARGET_ROWS:
            lines.append(_verdict(f"{where}: gRPC/REST CPU", p.cpu_ratio.mid, CPU_TARGET, False))
    return "\n".join(lines)


def _verdict(what: str, value: float, target: float, at_least: bool) -> str:
    sign = "≥" if at_least else "≤"
    met = value >= target if at_least else value <= target
    text = f"{what} {_num(value, 2)}× (target {sign} {_num(target, 2)}×): "
    if met:
        return text + "met"
    return text + f"missed by {_num(abs(value / target - 1) * 100, 0)} %"
