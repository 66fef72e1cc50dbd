"""gRPC の受け入れ制御：HTTP と同じ MAX_IN_FLIGHT_REQUESTS の予算で、超えた RPC をすぐ断る。

grpc.aio は受け取った RPC を C-core の待ち行列から 1 周回に 1 件ずつしか取り出さない。なので
押し寄せた RPC は Python からは見えない C-core の中で待ち、Python の中の処理中の数は上限に
届かない（c=2000 でも 5〜7 件）。待っている数は C-core の channelz の計数（始まった RPC −
終わった RPC）で読む。読むのは数 ms に 1 回だが、1 回の費用は接続の数とともに増える（接続 0 で
0.1〜0.4 ms、64 本で数 ms）ので、読む間隔は最後に読んだ費用の COST_FACTOR 倍以上にする
（読む費用はイベントループの時間の 1/COST_FACTOR 以下）。
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from model_in_image.state import ServerState
from model_in_image.transport.connections import count_in_flight, requests_in_flight

logger = logging.getLogger(__name__)

# C-core の計数を読み直す最短の間隔（秒）
SAMPLE_SECONDS = 0.005
# 読み直しの間隔は最後に読んだ時間のこの倍以上（読む費用を 1 % 以下に抑える）
COST_FACTOR = 100
# これだけ RPC が来なければ C-core の待ち行列は空と見なす（秒）
IDLE_SECONDS = 0.05


def _channelz() -> Any:
    """grpc の channelz の関数（grpcio-channelz と同じもの。無い版なら None）。"""
    try:
        from grpc._cython import cygrpc  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - grpcio の内部の構成が変わったとき
        return None
    return cygrpc if hasattr(cygrpc, "channelz_get_server") else None


def server_ids() -> set[int]:
    """このプロセスの grpc サーバーの channelz の id（channelz が無ければ空）。"""
    cygrpc = _channelz()
    if cygrpc is None:
        return set()
    listing = json.loads(cygrpc.channelz_get_servers(0))
    return {int(server["ref"]["serverId"]) for server in listing.get("server", ())}


def core_calls_reader(server_id: int) -> Callable[[], int]:
    """C-core が受け取って終わっていない RPC の数を返す関数（Python に渡る前の待ちを含む）。"""
    cygrpc = _channelz()

    def read() -> int:
        data = json.loads(cygrpc.channelz_get_server(server_id))["server"]["data"]
        finished = int(data.get("callsSucceeded", 0)) + int(data.get("callsFailed", 0))
        return int(data.get("callsStarted", 0)) - finished

    return read


class Admission:
    """処理待ち（HTTP + gRPC）が MAX_IN_FLIGHT_REQUESTS 以上なら、新しい RPC を断る。

    処理待ちの数は HTTP と共有する（transport.connection：同じワーカーの同じイベントループを
    使うので予算も 1 つ）。受け入れた RPC は、その RPC のタスクが終わるまで数える。それに
    C-core の中でまだ取り出されていない RPC の数（最後に読んだ値）を足して判断する。
    """

    def __init__(self, limit: int, state: ServerState) -> None:
        self.limit = limit
        self.state = state
        self.message = f"server is overloaded ({limit} requests in flight); retry later"
        self.active = 0  # 受け入れて終わっていない RPC（プローブを除く）
        self.waiting = 0  # C-core の中で待っている RPC（最後に読んだとき）
        self._read_core: Callable[[], int] | None = None
        self._next_sample = 0.0
        self._credit = 0.0  # 上限を超えている間に受け入れる割合の積算（_share）
        self._last = 0.0  # 最後に RPC を引いた時刻
        self._offset = 0  # C-core の計数の基準（数え残りの分：_sample）

    def watch_core(self, read: Callable[[], int]) -> None:
        """C-core の RPC の数を読む関数を与える（サーバーの起動後）。"""
        self._read_core = read

    def admit(self) -> bool:
        """受け入れるなら数え始めて True、断るなら断った数を足して False。"""
        now = perf_counter()
        idle, self._last = now - self._last >= IDLE_SECONDS, now
        if self._read_core is not None and (idle or now >= self._next_sample):
            self._sample(now, rebase=idle)
        total = requests_in_flight() + self.waiting
        if total >= self.limit and not self._share(total):
            if self.state.metrics is not None:
                self.state.metrics.rejected_grpc += 1
            return False
        task = asyncio.current_task()  # grpc.aio は RPC ごとのタスクの中でメソッドを引く
        if task is not None:
            count_in_flight(task)
            self.active += 1
            task.add_done_callback(self._done)
        return True

    def _share(self, total: int) -> bool:
        """上限を超えている間は、待っている数に対して上限の数の割合だけ受け入れる。

        HTTP が 1 周回に読んだリクエストのうち上限の数だけを受け入れるのと同じ形：待ち行列を
        一巡する間に約 limit 件を処理し、残りを断る。全部断ると、断った RPC にすぐ次の RPC が
        続く洪水では何も処理できなくなる。処理中（Python の中）が上限以上なら受け入れない。
        """
        if requests_in_flight() >= self.limit:
            return False
        self._credit += self.limit / total
        if self._credit < 1.0:
            return False
        self._credit -= 1.0
        return True

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.active -= 1

    def _sample(self, now: float, *, rebase: bool) -> None:
        """C-core の RPC の数を読み直す。

        channelz の計数は、C-core が自分の待ち行列の上限（既定で約 1000 件）を超えて断った RPC を
        終わったと数えない。なので RPC が IDLE_SECONDS 来なかった後（待ち行列は空のはず：待ちが
        あれば 1 周回のうちに取り出される）に読んだ値を基準（0 件）にし直す。
        """
        assert self._read_core is not None
        try:
            core = self._read_core() - self.active - 1  # 今引いている RPC 自身を除く
        except Exception:  # 読めなくなったら Python の中の数だけで判断する
            logger.exception("gRPC admission: cannot read the C-core call counts")
            self._read_core, self.waiting = None, 0
            return
        cost = perf_counter() - now
        self._next_sample = now + max(SAMPLE_SECONDS, COST_FACTOR * cost)
        if rebase:
            self._offset = core
        self.waiting = max(0, core - self._offset)
