"""/proc からプロセスツリーの CPU 時間と RSS を読む（Linux 専用）。"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """1 プロセスの時点値。CPU はクロック tick。"""

    pid: int
    ppid: int
    own_ticks: int  # utime + stime
    reaped_ticks: int  # cutime + cstime（回収済みの子の分）
    rss_bytes: int


def parse_stat(text: str) -> tuple[int, int, int]:
    """/proc/<pid>/stat から (ppid, utime+stime, cutime+cstime) を取り出す。"""
    # comm は空白や括弧を含みうる：最後の ')' の後ろから数える（state が先頭）
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ppid, utime + stime, cutime + cstime


def read_sample(pid: int) -> ProcSample | None:
    """1 プロセスを読む（もう居なければ None）。"""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        statm = (PROC / str(pid) / "statm").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ppid, own, reaped = parse_stat(stat)
    return ProcSample(pid, ppid, own, reaped, int(statm.split()[1]) * PAGE_SIZE)


def _parents() -> dict[int, int]:
    """全プロセスの pid -> ppid。"""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = parse_stat((entry / "stat").read_text())[0]
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    return parents


def tree_pids(root: int) -> list[int]:
    """root とその子孫の pid（幅優先）。"""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    order, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        order.append(pid)
        queue.extend(sorted(children.get(pid, [])))
    return order


def snapshot(root: int) -> dict[int, ProcSample]:
    """プロセスツリー全体の時点値。"""
    samples = (read_sample(pid) for pid in tree_pids(root))
    return {s.pid: s for s in samples if s is not None}


def total_ticks(tree: dict[int, ProcSample]) -> int:
    """ツリーの CPU 時間の合計（終了して回収された子の分も含む）。"""
    return sum(s.own_ticks + s.reaped_ticks for s in tree.values())


def ticks_to_seconds(ticks: int) -> float:
    """tick を秒にする。"""
    return ticks / CLK_TCK


def busy_processes(
    before: dict[int, ProcSample], after: dict[int, ProcSample], share: float = 0.1
) -> list[ProcSample]:
    """計測中に CPU 時間の share 以上を使ったプロセス（= リクエストを処理したワーカー）。"""
    deltas = {
        pid: s.own_ticks - (before[pid].own_ticks if pid in before else 0)
        for pid, s in after.items()
    }
    total = sum(max(d, 0) for d in deltas.values())
    if total <= 0:
        return []
    return [after[pid] for pid, d in deltas.items() if d >= share * total]


def system_ticks() -> tuple[int, int]:
    """マシン全体の (使用中, 合計) の CPU tick（/proc/stat の先頭行）。"""
    with (PROC / "stat").open() as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest は user に含まれるので足さない
    return total - idle, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """2 時点間のマシン全体の CPU 使用率（全コアに対する %）。"""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


def wait_for_idle(threshold_pct: float, max_wait_s: float, sample_s: float = 0.5) -> float:
    """マシン全体の CPU 使用率が閾値未満になるまで待ち、最後に測った値を返す。"""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = system_ticks()
        time.sleep(sample_s)
        busy = busy_percent(before, system_ticks())
        if threshold_pct <= 0 or busy < threshold_pct or time.monotonic() >= deadline:
            return busy
