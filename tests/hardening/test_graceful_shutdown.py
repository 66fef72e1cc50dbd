"""SIGTERM での正常終了。

readiness はすぐ 503、ドレイン中も推論は 200、処理中のリクエストは完了し、終了コードは 0。
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2_grpc

from model_in_image.dataplane import DataPlane
from support.batching import iris_requests
from support.grpc_v2 import typed_request
from support.samples import JSON, PREDICT_BODY
from support.servers import LiveServer, start_server

DRAIN = 2.0
LOAD_THREADS = 4
LOAD_SECONDS = 4.0
EXIT_TIMEOUT = 15.0
# ドレインの終わりにこれより近い時刻に送り始めたリクエストは、接続の拒否・切断を許す（混んだ
# マシンではスレッドが送り始めてから接続するまでに 0.1 秒を超えて待たされる：その 5 倍）
RACE_MARGIN = 0.5
# ドレインの終わりをまたぐアップロードを送り始める時刻（ドレインの終わりの前。送るのに 0.9 秒）
SLOW_LEAD = 0.8


@dataclass
class Outcome:
    """1 リクエストの結果（開始時刻・ステータスまたは例外名）。"""

    path: str
    started: float
    tag: str = ""
    status: int | None = None
    error: str | None = None


@dataclass
class Recorder:
    """スレッドから結果を集める。"""

    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        """結果を追加する。"""
        with self.lock:
            self.outcomes.append(outcome)


def _request(
    client: httpx.Client, method: str, path: str, recorder: Recorder, tag: str = "", **kw: Any
) -> None:
    outcome = Outcome(path, time.monotonic(), tag)
    try:
        outcome.status = client.request(method, path, **kw).status_code
    except httpx.HTTPError as exc:
        outcome.error = type(exc).__name__
    recorder.add(outcome)


def _load(base_url: str, until: float, recorder: Recorder) -> None:
    """keep-alive の接続 1 本で /predict を送り続ける。"""
    with httpx.Client(base_url=base_url, timeout=5.0, trust_env=False) as client:
        while time.monotonic() < until:
            _request(client, "POST", "/predict", recorder, content=PREDICT_BODY, headers=JSON)


def _probe(base_url: str, until: float, recorder: Recorder) -> None:
    """/readyz を 50 ms ごとに調べる（毎回新しい接続）。"""
    while time.monotonic() < until:
        with httpx.Client(base_url=base_url, timeout=2.0, trust_env=False) as client:
            _request(client, "GET", "/readyz", recorder)
        time.sleep(0.05)


def _slow_upload(base_url: str, start: float, recorder: Recorder) -> None:
    """ドレインの終わりをまたいでボディを少しずつ送る（終了処理の開始時に処理中のリクエスト）。"""

    def chunks() -> Iterator[bytes]:
        for part in (PREDICT_BODY[:10], PREDICT_BODY[10:20], PREDICT_BODY[20:]):
            yield part
            time.sleep(0.3)

    time.sleep(max(0.0, start - time.monotonic()))
    with httpx.Client(base_url=base_url, timeout=10.0, trust_env=False) as client:
        _request(client, "POST", "/predict", recorder, "slow", content=chunks(), headers=JSON)


@pytest.fixture
def draining_server(tmp_path: Path) -> Iterator[LiveServer]:
    """SHUTDOWN_DRAIN_SECONDS=2 のサーバー。"""
    server = start_server(tmp_path, {"SHUTDOWN_DRAIN_SECONDS": str(DRAIN)})
    try:
        yield server
    finally:
        server.stop()


def test_sigterm_drains_and_exits_cleanly(draining_server: LiveServer) -> None:
    base = draining_server.base_url
    recorder = Recorder()
    begin = time.monotonic()
    until = begin + LOAD_SECONDS
    sigterm_at = begin + 1.0
    threads = [
        threading.Thread(target=_load, args=(base, until, recorder)) for _ in range(LOAD_THREADS)
    ]
    threads.append(threading.Thread(target=_probe, args=(base, until, recorder)))
    threads.append(
        threading.Thread(target=_slow_upload, args=(base, sigterm_at + DRAIN - SLOW_LEAD, recorder))
    )
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, sigterm_at - time.monotonic()))
    sigterm_at = time.monotonic()
    draining_server.terminate()
    code = draining_server.wait(EXIT_TIMEOUT)
    exited_after = time.monotonic() - sigterm_at
    for thread in threads:
        thread.join(timeout=15)
    outcomes = sorted(recorder.outcomes, key=lambda o: o.started)
    drain_end = sigterm_at + DRAIN

    assert code == 0, draining_server.log()
    assert exited_after < DRAIN + 5.0
    predictions = [o for o in outcomes if o.path == "/predict"]
    assert not [o for o in predictions if o.status is not None and o.status >= 500]
    before = [o for o in predictions if o.started < sigterm_at]
    assert before
    assert all(o.status == 200 for o in before)
    during = [o for o in outcomes if sigterm_at + 0.1 < o.started < drain_end - RACE_MARGIN]
    assert [o.status for o in during if o.path == "/readyz"], "no readiness probe during the drain"
    assert all(o.status == 503 for o in during if o.path == "/readyz"), during
    served = [o for o in during if o.path == "/predict"]
    assert served
    assert all(o.status == 200 for o in served), [o for o in served if o.status != 200]
    # ドレインの終わりをまたいだアップロード（処理中）も 200 で完了する
    slow = [o for o in outcomes if o.tag == "slow"]
    assert [o.status for o in slow] == [200], slow
    late_errors = {o.error for o in outcomes if o.error and o.started >= drain_end - RACE_MARGIN}
    early_errors = [o for o in outcomes if o.error and o.started < drain_end - RACE_MARGIN]
    assert not early_errors, early_errors
    assert late_errors <= {"ConnectError", "RemoteProtocolError", "ReadError"}, late_errors
    print(
        f"\nshutdown: exit {code} after {exited_after:.2f} s; {len(outcomes)} requests, "
        f"{len(served)} served during the drain, late connection errors: {sorted(late_errors)}"
    )


def test_sigterm_with_a_batch_waiting_loses_nothing(tmp_path: Path, dataplane: DataPlane) -> None:
    """適応バッチの待ち行列のリクエスト（REST と gRPC）は SIGTERM で待たずに推論され、全部答える。

    遅延（10 秒）は終了までの時間より長い：答えが返るのはドレインがバッチを流したから。
    """
    delay_s = 10.0  # 上限（MAX_BATCH_DELAY_MS ≤ 10000）
    env = {
        "MAX_BATCH_SIZE": "64",
        "MAX_BATCH_DELAY_MS": str(delay_s * 1000),
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    server = start_server(tmp_path, env, grpc=True)
    requests = iris_requests(9, seed=11)
    http_results: dict[int, tuple[int, Any]] = {}
    grpc_results: dict[int, Any] = {}

    def rest(index: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=delay_s, trust_env=False) as client:
            response = client.post("/predict", json={"data": requests[index]})
            http_results[index] = (response.status_code, response.json())

    def rpc(index: int) -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = typed_request("input", np.asarray(requests[index], dtype=np.float32))
            response = stub.ModelInfer(request, timeout=delay_s)
            grpc_results[index] = np.asarray(response.outputs[0].contents.fp32_contents)

    try:
        threads = [threading.Thread(target=rest, args=(i,)) for i in range(6)]
        threads += [threading.Thread(target=rpc, args=(i,)) for i in range(6, 9)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # 全員が待ち行列に入るまで（遅延のタイマーはまだ 9 秒残る）
        sigterm_at = time.monotonic()
        server.terminate()
        code = server.wait(EXIT_TIMEOUT)
        for thread in threads:
            thread.join(timeout=EXIT_TIMEOUT)
        exited_after = time.monotonic() - sigterm_at
    finally:
        server.stop()
    assert code == 0, server.log()
    assert exited_after < delay_s / 2
    for index, rows in enumerate(requests):
        want = dataplane.predict(dataplane.validate(rows, loc=("data",)))
        if index in grpc_results:
            np.testing.assert_allclose(grpc_results[index], want.ravel(), rtol=1e-6)
            continue
        status, body = http_results[index]
        assert status == 200
        np.testing.assert_allclose(np.asarray(body["prediction"]).ravel(), want.ravel())
