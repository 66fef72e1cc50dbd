"""適応バッチ（REST）：並行に送った別々のリクエストの答えが、バッチなしの答えと同じ。

シード API・V1・V2 REST。悪いリクエストは自分だけが失敗し、待ち行列が満ちれば 503 で断る。
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import create_app
from support.apps import SettingsFactory
from support.batching import MERGE_DELAY_MS, batch_stats, concurrently, iris_requests, v2_body
from support.prometheus import samples, value
from support.samples import MODEL, V2_INFER

BATCHING = {"max_batch_size": 16, "max_batch_delay_ms": MERGE_DELAY_MS}
Send = Callable[[TestClient, list[list[float]]], tuple[int, Any]]


def _post(path: str, body: Callable[[list[list[float]]], Any]) -> Send:
    def send(client: TestClient, rows: list[list[float]]) -> tuple[int, Any]:
        response = client.post(path, json=body(rows))
        return response.status_code, response.json()

    return send


ROUTES: dict[str, Send] = {
    "seed": _post("/predict", lambda rows: {"data": rows}),
    "seed-label": _post("/predict/label", lambda rows: {"data": rows}),
    "v2": _post(V2_INFER, v2_body),
    "v1": _post(f"/v1/models/{MODEL}:predict", lambda rows: {"instances": rows}),
}


@pytest.fixture
def serve(make_settings: SettingsFactory) -> Iterator[Callable[..., TestClient]]:
    """設定の上書きでアプリを起動する（テストの終わりに止める）。"""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(access_log=False, **overrides)))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.mark.parametrize("route", list(ROUTES))
def test_concurrent_answers_equal_unbatched_ones(
    serve: Callable[..., TestClient], route: str
) -> None:
    send, requests = ROUTES[route], iris_requests(60, seed=len(route))
    plain = serve()
    expected = [send(plain, rows) for rows in requests]
    batched = serve(**BATCHING)
    got = concurrently(lambda rows: send(batched, rows), requests)
    assert got == expected  # どの答えも自分の行だけ、バッチなしと同じ値
    stats = batch_stats(batched.get("/metrics").text)
    assert stats["requests"] == stats["waits"] == len(requests)
    assert stats["rows"] == sum(len(rows) for rows in requests)
    assert stats["batches"] < len(requests)  # まとめた推論があった


def test_a_bad_request_among_good_ones_fails_alone(serve: Callable[..., TestClient]) -> None:
    """検証はバッチの前：幅違いの 422 はほかのリクエストを巻き込まない。"""
    send = ROUTES["seed"]
    good = iris_requests(20, seed=3)
    bad = [[1.0, 2.0]]  # 幅違い
    plain = serve()
    expected = [send(plain, rows) for rows in good]
    batched = serve(**BATCHING)
    got = concurrently(lambda rows: send(batched, rows), [*good[:10], bad, *good[10:]])
    assert got[10][0] == 422
    assert got[:10] + got[11:] == expected


def test_a_request_larger_than_the_batch_runs_alone(serve: Callable[..., TestClient]) -> None:
    send = ROUTES["v2"]
    big = [rows[0] for rows in iris_requests(40, seed=5, max_rows=1)]
    requests = [*iris_requests(10, seed=4, max_rows=2), big]  # 40 行のリクエストが 1 つ
    plain = serve()
    expected = [send(plain, rows) for rows in requests]
    batched = serve(max_batch_size=4, max_batch_delay_ms=MERGE_DELAY_MS)
    assert concurrently(lambda rows: send(batched, rows), requests) == expected
    rows = samples(batched.get("/metrics").text, "model_in_image_inference_batch_rows_bucket")
    assert rows[(("le", "32.0"),)] < rows[(("le", "64.0"),)]  # 大きなリクエストは 1 回で


def test_a_full_queue_answers_503_with_retry_after(serve: Callable[..., TestClient]) -> None:
    """待ち行列（MAX_BATCH_QUEUE）が満ちていれば待たせずに断る：受け入れ制御と同じ 503。"""
    client = serve(max_batch_size=64, max_batch_delay_ms=1000, max_batch_queue=1)

    def send(_: int) -> tuple[int, str | None]:
        response = client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
        return response.status_code, response.headers.get("retry-after")

    results = sorted(concurrently(send, range(2), threads=2))
    assert results == [(200, None), (503, "1")]
    metrics = client.get("/metrics").text
    rejected = samples(metrics, "model_in_image_requests_rejected_total")
    assert rejected[(("protocol", "http"),)] == 1


def test_batching_off_creates_no_queue(serve: Callable[..., TestClient]) -> None:
    """MAX_BATCH_SIZE=1（既定）：待ち行列もスレッドも作らない。"""
    client = serve()
    assert client.app.state.dataplane.batcher is None  # type: ignore[attr-defined]
    assert batch_stats(client.get("/metrics").text)["batches"] == 0


def test_a_lone_request_waits_at_most_the_delay(serve: Callable[..., TestClient]) -> None:
    """遅延 > 0：仲間が来なければタイマーで走る（待ちは遅延ほど、上限は余裕を持って確かめる）。"""
    delay_s = 0.2
    client = serve(max_batch_size=8, max_batch_delay_ms=delay_s * 1000)
    start = perf_counter()
    response = client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
    elapsed = perf_counter() - start
    assert response.status_code == 200
    assert elapsed < delay_s + 5.0  # 遅延の後には必ず走る（遅いマシンでも落ちない余裕）
    metrics = client.get("/metrics").text
    waited = value(metrics, "model_in_image_batch_queue_wait_seconds_sum") or 0.0
    assert delay_s / 2 <= waited < delay_s + 5.0  # タイマーまで待った（すぐ走ってはいない）
    assert "# TYPE model_in_image_batch_requests histogram" in metrics
    assert "# TYPE model_in_image_batch_queue_wait_seconds histogram" in metrics
