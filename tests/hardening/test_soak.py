"""ソーク：正しい・不正なリクエストを混ぜて 60 秒以上流し、5xx ゼロ・RSS の増加が上限未満。

時間は MII_SOAK_SECONDS で変えられる（既定 60）。127.0.0.1 だけに送る。
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from support.net import rss_kb
from support.samples import JSON, V2_INFER
from support.servers import LiveServer, start_server

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("MII_SOAK_SECONDS", "60"))
WARMUP_SECONDS = 5.0
THREADS = 2
RSS_GROWTH_LIMIT_KB = 20 * 1024
ROWS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]]

Request = Callable[[httpx.Client, random.Random], httpx.Response]


def _predict(client: httpx.Client, rng: random.Random) -> httpx.Response:
    data = [rng.choice(ROWS) for _ in range(rng.randint(1, 64))]
    path = rng.choice(["/predict", "/predict/label"])
    return client.post(path, content=orjson.dumps({"data": data}), headers=JSON)


def _v2_json(client: httpx.Client, rng: random.Random) -> httpx.Response:
    rows = [rng.choice(ROWS) for _ in range(rng.randint(1, 32))]
    tensor = {"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}
    return client.post(
        V2_INFER, content=orjson.dumps({"id": "s", "inputs": [tensor]}), headers=JSON
    )


def _v2_binary(client: httpx.Client, rng: random.Random) -> httpx.Response:
    rows = np.array([rng.choice(ROWS) for _ in range(rng.randint(1, 32))], dtype="<f4")
    raw = rows.tobytes()
    tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    headers = {"inference-header-content-length": str(len(header))}
    return client.post(V2_INFER, content=header + raw, headers=headers)


def _reads(client: httpx.Client, rng: random.Random) -> httpx.Response:
    path = rng.choice(["/metadata", "/label", "/predict/test", "/v2/models/iris_svc", "/metrics"])
    return client.get(path)


INVALID_BODIES = [
    b"",
    b"{",
    b'{"data": [[5.1, 3.5, 1.4]]}',
    b'{"data": [[NaN, 3.5, 1.4, 0.2]]}',
    b'{"data": [[1e39, 3.5, 1.4, 0.2]]}',
    b'{"data": [["a", true, null, {}]]}',
    b'{"data": []}',
    b'{"extra": ' + b"[" * 5000 + b"]" * 5000 + b', "data": [[1, 2, 3, 4]]}',
    b'{"data": [[5.1, 3.5, 1.4, 0.2]], "x": "\xff\xfe"}',
    b"\x00\xff" * 100,
    "🙂".encode() * 1000,
]


def _invalid(client: httpx.Client, rng: random.Random) -> httpx.Response:
    choice = rng.randrange(4)
    if choice == 0:
        return client.post(rng.choice(["/predict", V2_INFER]), content=rng.choice(INVALID_BODIES))
    if choice == 1:
        return client.request(rng.choice(["PUT", "DELETE", "PATCH"]), "/predict")
    if choice == 2:
        return client.get(f"/v2/models/m{rng.randrange(10**6)}")
    return client.post("/predict", content=b"x" * 1_100_000, headers=JSON)  # 413


MIX: list[tuple[Request, int]] = [
    (_predict, 30),
    (_v2_json, 15),
    (_v2_binary, 15),
    (_reads, 15),
    (_invalid, 25),
]


@dataclass
class Tally:
    """結果の集計（スレッド間で共有）。"""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int | None, error: str | None = None) -> None:
        """1 件を記録する。"""
        with self.lock:
            if status is not None:
                self.statuses[status] += 1
            if error is not None:
                self.errors[error] += 1

    @property
    def total(self) -> int:
        """件数。"""
        return sum(self.statuses.values()) + sum(self.errors.values())


def _traffic(base_url: str, seconds: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    requests, weights = zip(*MIX, strict=True)
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base_url, timeout=10.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            (request,) = rng.choices(requests, weights)
            try:
                tally.record(request(client, rng).status_code)
            except httpx.HTTPError as exc:
                tally.record(None, f"{request.__name__}: {type(exc).__name__}")


def _run(server: LiveServer, seconds: float, tally: Tally) -> None:
    threads = [
        threading.Thread(target=_traffic, args=(server.base_url, seconds, seed, tally))
        for seed in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)


@pytest.fixture
def soak_server(tmp_path: Path) -> LiveServer:
    """ソーク用のサーバー（テストの最後に止める）。"""
    return start_server(tmp_path)


def test_soak_mixed_traffic(soak_server: LiveServer) -> None:
    try:
        _run(soak_server, WARMUP_SECONDS, Tally())
        before = rss_kb(soak_server.pid)
        tally = Tally()
        started = time.monotonic()
        _run(soak_server, SOAK_SECONDS, tally)
        elapsed = time.monotonic() - started
        after = rss_kb(soak_server.pid)
        log = soak_server.log()
    finally:
        soak_server.stop()
    server_errors = {s: n for s, n in tally.statuses.items() if s >= 500}
    client_errors = sum(n for s, n in tally.statuses.items() if 400 <= s < 500)
    print(
        f"\nsoak: {tally.total} requests in {elapsed:.1f} s ({tally.total / elapsed:.0f}/s, "
        f"{THREADS} threads); statuses {dict(sorted(tally.statuses.items()))}; "
        f"4xx {client_errors}, 5xx {sum(server_errors.values())}, "
        f"connection errors {sum(tally.errors.values())}; "
        f"RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB "
        f"({(after - before) / 1024:+.1f} MiB)"
    )
    assert elapsed >= SOAK_SECONDS
    assert tally.statuses[200] > 0
    assert client_errors > 0
    assert not server_errors, server_errors
    assert not tally.errors, tally.errors
    assert after - before < RSS_GROWTH_LIMIT_KB
    assert "Traceback" not in log
