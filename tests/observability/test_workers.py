"""ワーカー 2 つ：どのワーカーがスクレイプに答えても、予測の数と PSI は全ワーカーの合計から出る。"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from benchmarks.processes import request

from model_in_image.modelcard import ModelCard, bin_counts
from model_in_image.observability.drift import population_stability_index
from support.iris import training_rows
from support.paths import CARD_FILE
from support.prometheus import by_label, value
from support.servers import LiveServer, running_server

REQUESTS = 30
ROWS_PER_REQUEST = 10
TOTAL = REQUESTS * ROWS_PER_REQUEST
SCRAPES = 6


def scrape(server: LiveServer) -> str:
    """/metrics（新しい接続で）。"""
    status, body = request(server.port, "GET", "/metrics")  # 新しい接続：どのワーカーかは不定
    assert status == 200
    return body.decode()


def serving_pids(server: LiveServer, route: str) -> set[int]:
    """route を処理したワーカーの pid（JSON のアクセスログの process）。"""
    pids = set()
    for line in server.log().splitlines():
        if line.startswith("{") and f'"route":"{route}"' in line:
            pids.add(json.loads(line)["process"])
    return pids


def wait_for_both_workers(server: LiveServer) -> None:
    """2 つ目のワーカーも起動し終えるまで待つ（/readyz は先に起きた方だけが答えることがある）。"""
    deadline = time.monotonic() + 60
    while len(serving_pids(server, "/metadata")) < 2:
        assert time.monotonic() < deadline, server.log()
        assert request(server.port, "GET", "/metadata")[0] == 200
        time.sleep(0.05)


def test_two_workers_report_the_combined_window(tmp_path: Path) -> None:
    env = {"WORKERS": "2", "LOG_FORMAT": "JSON", "DRIFT_WINDOW_ROWS": str(TOTAL)}
    rows = training_rows(TOTAL, seed=7)
    with running_server(tmp_path, env) as server:
        wait_for_both_workers(server)
        for start in range(0, TOTAL, ROWS_PER_REQUEST):
            # 1 リクエスト 1 接続：どちらのワーカーが受けるかはカーネルが決める
            body = json.dumps({"data": rows[start : start + ROWS_PER_REQUEST].tolist()})
            assert request(server.port, "POST", "/predict", body)[0] == 200
        deadline = time.monotonic() + 15
        while _predicted(scrape(server)) < TOTAL:  # 各ワーカーは 1 秒ごとに反映する
            assert time.monotonic() < deadline, scrape(server)
            time.sleep(0.2)
        texts = [scrape(server) for _ in range(SCRAPES)]
        assert len(serving_pids(server, "/predict")) == 2  # 両方の窓に行がある

    card = ModelCard.read(CARD_FILE)
    assert card.reference is not None
    expected = {
        ref.name: population_stability_index(
            bin_counts(ref.edges, rows[:, j].astype(np.float64)), ref.proportions
        )
        for j, ref in enumerate(card.reference.features)
    }
    for text in texts:  # どのワーカーが答えても同じ合計
        assert _predicted(text) == TOTAL
        assert value(text, "model_feature_drift_window_rows") == TOTAL
        psi = by_label(text, "model_feature_drift_psi", "feature")
        assert psi == pytest.approx(expected, abs=1e-9)
        assert all(v < 0.1 for v in psi.values()), psi
        assert value(text, "model_prediction_confidence_count") == TOTAL


def _predicted(text: str) -> float:
    return sum(by_label(text, "model_predictions_total", "class").values())
