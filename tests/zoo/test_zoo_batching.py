"""動物園のどのモデルも適応バッチで同じ答え：複数入力・int64・文字列・ZipMap・固定のバッチの次元。

各行を別々のリクエストとして並行に送り（まとめて推論される）、フレームワーク自身の予測と比べる。
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from support.batching import MERGE_DELAY_MS, batch_stats, concurrently
from support.zoo import Serve, case_names, load_case, v2_request

BATCHING = {"max_batch_size": 4, "max_batch_delay_ms": MERGE_DELAY_MS, "access_log": False}


@pytest.mark.parametrize("name", case_names())
def test_batched_answers_match_the_framework(serve: Serve, name: str) -> None:
    case = load_case(name)
    client = serve(name, **BATCHING)
    singles = [[row] for row in case.rows]
    requests = [*singles, case.rows[:2], case.rows[2:5]]  # 1 行・2 行・3 行が混ざる

    def send(rows: list[Any]) -> Any:
        response = client.post("/predict", json={"data": rows})
        assert response.status_code == 200, response.text
        return response.json()["prediction"]  # 1 行なら平らな形（シードと同じ）

    answers = concurrently(send, requests, threads=len(requests))
    rtol, atol = case.tolerance
    want = case.prediction.values
    got = np.asarray(answers[: len(singles)])
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=rtol, atol=atol)
    pairs = np.asarray(answers[-2] + answers[-1])
    np.testing.assert_allclose(pairs.reshape(want[:5].shape), want[:5], rtol=rtol, atol=atol)
    assert batch_stats(client.get("/metrics").text)["batches"] < len(requests)


@pytest.mark.parametrize("name", case_names())
def test_batched_v2_labels_match_the_framework(serve: Serve, name: str) -> None:
    case = load_case(name)
    if case.labels is None:
        pytest.skip("no class labels")
    client = serve(name, **BATCHING)

    def send(row: Any) -> str:
        response = client.post(f"/v2/models/{case.name}/infer", json=v2_request(case, [row]))
        assert response.status_code == 200, response.text
        label = next(o for o in response.json()["outputs"] if o["name"] == "label")
        return str(label["data"][0])

    assert concurrently(send, case.rows, threads=len(case.rows)) == case.labels.values


def test_a_token_the_model_cannot_compute_fails_alone(serve: Serve) -> None:
    """値の誤り（語彙の外のトークン）は推論して初めて分かる：まとめた推論を 1 件ずつやり直す。"""
    case = load_case("torch_embedding")
    client = serve(case.name, **BATCHING)
    bad = [40, *case.rows[0][1:]]
    requests = [[row] for row in case.rows[:3]] + [[bad]] + [[row] for row in case.rows[3:]]

    def send(rows: list[Any]) -> tuple[int, Any]:
        response = client.post("/predict", json={"data": rows})
        return response.status_code, response.json()

    answers = concurrently(send, requests, threads=len(requests))
    assert answers[3][0] == 400
    assert "out of data bounds" in str(answers[3][1])
    good = [answer for i, answer in enumerate(answers) if i != 3]
    assert all(status == 200 for status, _ in good)
    got = np.asarray([body["prediction"] for _, body in good])
    rtol, atol = case.tolerance
    np.testing.assert_allclose(got, case.prediction.values, rtol=rtol, atol=atol)
