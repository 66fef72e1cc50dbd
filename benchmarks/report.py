"""計測値の集計・比率・表（Markdown）・JSON・グラフ（PNG）。"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# 比率を出す組（分子, 分母）：どちらかが無ければ省く
RATIO_PAIRS: tuple[tuple[str, str], ...] = (
    ("ours", "textbook"),
    ("ours", "floor"),
    ("ours", "ours-noaccesslog"),
    ("ours", "ours-nomonitoring"),
    ("ours", "ours-bare"),
    ("ours", "ours-nometrics"),
    ("ours", "ours-nogrpc"),
    ("ours-tracing", "ours"),
    ("ours-batch64", "ours"),
    ("ours-mlp-batch64", "ours-mlp"),
)


@dataclass(frozen=True, slots=True)
class Sample:
    """1 回の計測（1 サーバー × 1 ワーカー数 × 1 負荷 × 1 反復）。"""

    variant: str
    workers: int
    load: str
    repeat: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_req: float
    rss_worker_mb: float
    rss_total_mb: float
    busy_processes: int
    # wrk 自身の CPU と、サーバー・wrk 以外の CPU 使用率（雑音の目安）
    wrk_cpu_us_per_req: float = float("nan")
    foreign_cpu_pct: float = 0.0
    # 推論 1 回あたりの行数の平均（/metrics から。適応バッチがまとめた大きさ、測れなければ nan）
    batch_rows: float = float("nan")


@dataclass(frozen=True, slots=True)
class Stat:
    """反復の中央値と最小・最大。"""

    mid: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """値の列から作る。"""
        return cls(statistics.median(values), min(values), max(values))

    @property
    def spread_pct(self) -> float:
        """(最大 - 最小) / 中央値 の百分率。"""
        return 100 * (self.hi - self.lo) / self.mid if self.mid else 0.0


@dataclass(frozen=True, slots=True)
class Point:
    """集計した 1 点（サーバー × ワーカー数 × 負荷）。"""

    variant: str
    workers: int
    load: str
    n: int
    rps: Stat
    p50_ms: Stat
    p99_ms: Stat
    cpu_us_per_req: Stat
    rss_worker_mb: Stat
    errors: int
    foreign_cpu_pct: Stat


def aggregate(samples: Iterable[Sample]) -> list[Point]:
    """反復をまとめる（出現順を保つ）。"""
    groups: dict[tuple[str, int, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.variant, s.workers, s.load), []).append(s)
    return [
        Point(
            variant=variant,
            workers=workers,
            load=load,
            n=len(group),
            rps=Stat.of([s.rps for s in group]),
            p50_ms=Stat.of([s.p50_ms for s in group]),
            p99_ms=Stat.of([s.p99_ms for s in group]),
            cpu_us_per_req=Stat.of([s.cpu_us_per_req for s in group]),
            rss_worker_mb=Stat.of([s.rss_worker_mb for s in group]),
            errors=sum(s.errors for s in group),
            foreign_cpu_pct=Stat.of([s.foreign_cpu_pct for s in group]),
        )
        for (variant, workers, load), group in groups.items()
    ]


def ratio(num: Stat, den: Stat) -> Stat:
    """比率（中央値どうし、範囲は最も不利・有利な組み合わせ）。"""
    if den.mid <= 0 or den.lo <= 0:
        return Stat(float("nan"), float("nan"), float("nan"))
    return Stat(num.mid / den.mid, num.lo / den.hi, num.hi / den.lo)


@dataclass(frozen=True, slots=True)
class Ratio:
    """1 点での比率（req/s と CPU/リクエスト）。"""

    workers: int
    load: str
    num: str
    den: str
    rps: Stat
    cpu: Stat


def ratios(points: Sequence[Point]) -> list[Ratio]:
    """RATIO_PAIRS の比率を、両方が測られた点ごとに求める。"""
    index = {(p.variant, p.workers, p.load): p for p in points}
    keys = sorted({(p.workers, p.load) for p in points}, key=lambda k: _point_order(points, k))
    out = []
    for workers, load in keys:
        for num, den in RATIO_PAIRS:
            a, b = index.get((num, workers, load)), index.get((den, workers, load))
            if a and b:
                out.append(
                    Ratio(
                        workers,
                        load,
                        num,
                        den,
                        ratio(a.rps, b.rps),
                        ratio(a.cpu_us_per_req, b.cpu_us_per_req),
                    )
                )
    return out


def _point_order(points: Sequence[Point], key: tuple[int, str]) -> int:
    return next(i for i, p in enumerate(points) if (p.workers, p.load) == key)


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _with_range(stat: Stat, digits: int = 0) -> str:
    if stat.lo == stat.hi:
        return _num(stat.mid, digits)
    return f"{_num(stat.mid, digits)} [{_num(stat.lo, digits)}–{_num(stat.hi, digits)}]"


def sort_points(
    points: Sequence[Point], load_order: Sequence[str], variant_order: Sequence[str]
) -> list[Point]:
    """ワーカー数 → 負荷 → サーバーの順に並べる。"""

    def key(p: Point) -> tuple[int, int, int]:
        return (
            p.workers,
            load_order.index(p.load) if p.load in load_order else len(load_order),
            variant_order.index(p.variant) if p.variant in variant_order else len(variant_order),
        )

    return sorted(points, key=key)


def render_table(points: Sequence[Point], load_labels: dict[str, str]) -> str:
    """結果の表（Markdown）。[ ] は反復の最小–最大、other CPU は計測中の他プロセスの CPU 使用率。"""
    lines = [
        "| workers | load | server | req/s | p50 ms | p99 ms | CPU µs/req | RSS/worker MB "
        "| errors | other CPU |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.workers} | {load_labels.get(p.load, p.load)} | {p.variant} "
            f"| {_with_range(p.rps)} | {_num(p.p50_ms.mid, 2)} | {_with_range(p.p99_ms, 2)} "
            f"| {_with_range(p.cpu_us_per_req)} | {_num(p.rss_worker_mb.mid)} | {p.errors} "
            f"| {_num(p.foreign_cpu_pct.hi)} % |"
        )
    return "\n".join(lines)


def render_ratios(items: Sequence[Ratio], load_labels: dict[str, str]) -> str:
    """比率の表（Markdown）。CPU は小さいほど良い。"""
    lines = [
        "| workers | load | ratio | req/s | CPU/req |",
        "|---:|---|---|---:|---:|",
    ]
    for r in items:
        lines.append(
            f"| {r.workers} | {load_labels.get(r.load, r.load)} | {r.num}/{r.den} "
            f"| {_with_range(r.rps, 2)}× | {_with_range(r.cpu, 2)}× |"
        )
    return "\n".join(lines)


def write_json(
    path: Path, meta: dict[str, Any], samples: Sequence[Sample], points: Sequence[Point]
) -> None:
    """生の計測値と集計を JSON に書く。"""
    payload = {
        "meta": meta,
        "samples": [asdict(s) for s in samples],
        "points": [asdict(p) for p in points],
        "ratios": [asdict(r) for r in ratios(points)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def draw_chart(
    path: Path, points: Sequence[Point], load_labels: dict[str, str], title: str
) -> None:
    """req/s と CPU µs/req の棒グラフ（誤差棒は反復の最小–最大）。"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: list[tuple[int, str]] = []
    for p in points:
        if (p.workers, p.load) not in groups:
            groups.append((p.workers, p.load))
    variants: list[str] = []
    for p in points:
        if p.variant not in variants:
            variants.append(p.variant)
    index = {(p.variant, p.workers, p.load): p for p in points}
    width = 0.8 / max(len(variants), 1)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(groups)), 8), constrained_layout=True)
    panels: tuple[tuple[str, str], ...] = (
        ("req/s", "rps"),
        ("server CPU µs / request", "cpu_us_per_req"),
    )
    for ax, (ylabel, attr) in zip(axes, panels, strict=True):
        for i, variant in enumerate(variants):
            xs: list[float] = []
            ys: list[float] = []
            err_lo: list[float] = []
            err_hi: list[float] = []
            for g, (workers, load) in enumerate(groups):
                point = index.get((variant, workers, load))
                if point is None:
                    continue
                stat: Stat = getattr(point, attr)
                xs.append(g + (i - (len(variants) - 1) / 2) * width)
                ys.append(stat.mid)
                err_lo.append(stat.mid - stat.lo)
                err_hi.append(stat.hi - stat.mid)
            ax.bar(xs, ys, width, yerr=[err_lo, err_hi], capsize=2, label=variant)
        ax.set_ylabel(ylabel)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(
            [f"{w} worker(s)\n{load_labels.get(load, load)}" for w, load in groups], fontsize=8
        )
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
