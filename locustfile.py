"""負荷試験（locust）：シード API に 3 品種の推論を送り、仕様の目標を確かめる。

目標（仕様書 §1.2）：p99 < 100 ms、100 req/s 超。外れたら終了コード 1。

    make loadtest URL=http://127.0.0.1:8000
    uv run --frozen locust -f locustfile.py --headless -u 50 -r 10 -t 30s \\
        --host http://127.0.0.1:8000 --only-summary

ローカル・コンテナ・Kubernetes の Service など、動いている任意のサーバーに使える。
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task
from locust.env import Environment

# (期待するラベル, 特徴量)（チュートリアル §5.3）
SAMPLES: tuple[tuple[str, list[float]], ...] = (
    ("setosa", [5.1, 3.5, 1.4, 0.2]),
    ("versicolor", [5.9, 3.0, 4.2, 1.5]),
    ("virginica", [6.3, 2.9, 5.6, 1.8]),
)
DEFAULT_LABELS = ("setosa", "versicolor", "virginica")


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    """目標値などの引数（環境変数でも渡せる）。"""
    group = parser.add_argument_group("model-in-image targets")
    group.add_argument(
        "--p99-ms", type=float, default=100.0, env_var="LOADTEST_P99_MS", help="p99 の上限（ms）"
    )
    group.add_argument(
        "--min-rps", type=float, default=100.0, env_var="LOADTEST_MIN_RPS", help="req/s の下限"
    )
    group.add_argument(
        "--think-time-ms",
        type=float,
        default=0.0,
        env_var="LOADTEST_THINK_TIME_MS",
        help="ユーザーごとのリクエスト間隔（ms、既定 0 = 待たない）",
    )
    group.add_argument(
        "--summary-json",
        default="",
        env_var="LOADTEST_SUMMARY_JSON",
        help="結果と判定を書き出す JSON ファイル",
    )


class SeedApiUser(FastHttpUser):
    """POST /predict と /predict/label を 3 品種で交互に送り、ラベルを確かめる。"""

    def wait_time(self) -> float:
        """--think-time-ms の間隔（秒）。"""
        return float(self.environment.parsed_options.think_time_ms) / 1000

    def on_start(self) -> None:
        """ラベルの並び（/label）を取得する。失敗しても既定の並びで続ける。"""
        self.samples = itertools.cycle(SAMPLES)
        self.labels = list(DEFAULT_LABELS)
        with self.client.get("/label", name="/label", catch_response=True) as response:
            try:
                mapping = response.json()
                self.labels = [mapping[str(i)] for i in range(len(mapping))]
            except (ValueError, KeyError, TypeError):
                response.failure(f"GET /label returned {response.status_code}")

    @task
    def predict(self) -> None:
        """確率の最大が期待する品種であること。"""
        expected, row = next(self.samples)
        with self.client.post(
            "/predict", json={"data": [row]}, name="/predict", catch_response=True
        ) as response:
            try:
                proba = response.json()["prediction"]
                got = self.labels[max(range(len(proba)), key=proba.__getitem__)]
            except (ValueError, KeyError, TypeError, IndexError):
                response.failure(f"/predict: unexpected response {response.status_code}")
                return
            if got != expected:
                response.failure(f"/predict: expected {expected}, got {got}")

    @task
    def predict_label(self) -> None:
        """ラベル名が期待する品種であること。"""
        expected, row = next(self.samples)
        with self.client.post(
            "/predict/label", json={"data": [row]}, name="/predict/label", catch_response=True
        ) as response:
            try:
                got = response.json()["prediction"]
            except (ValueError, KeyError, TypeError):
                response.failure(f"/predict/label: unexpected response {response.status_code}")
                return
            if got != expected:
                response.failure(f"/predict/label: expected {expected}, got {got}")


def evaluate(
    requests: int, failures: int, rps: float, p99_ms: float, *, max_p99_ms: float, min_rps: float
) -> list[str]:
    """目標との差（空なら合格）。"""
    problems = []
    if requests == 0:
        problems.append("no requests completed")
    if failures:
        problems.append(f"{failures} failed requests")
    if p99_ms >= max_p99_ms:
        problems.append(f"p99 {p99_ms:.0f} ms is not below {max_p99_ms:g} ms")
    if rps <= min_rps:
        problems.append(f"{rps:.1f} req/s is not above {min_rps:g} req/s")
    return problems


@events.quitting.add_listener
def _report(environment: Environment, **_kwargs: Any) -> None:
    """終了時に req/s と p50/p95/p99 を表示し、目標を外れたら終了コードを 1 にする。"""
    options = environment.parsed_options
    total = environment.stats.total
    p50, p95, p99 = (total.get_response_time_percentile(q) or 0.0 for q in (0.5, 0.95, 0.99))
    problems = evaluate(
        total.num_requests,
        total.num_failures,
        total.total_rps,
        p99,
        max_p99_ms=options.p99_ms,
        min_rps=options.min_rps,
    )
    summary = {
        "host": environment.host,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "rps": round(total.total_rps, 1),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "targets": {"p99_ms_below": options.p99_ms, "rps_above": options.min_rps},
        "passed": not problems,
        "problems": problems,
    }
    print(
        f"\n== load test {environment.host}: {total.num_requests} requests, "
        f"{total.num_failures} failures, {total.total_rps:.1f} req/s, "
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
    )
    print(
        f"== targets p99 < {options.p99_ms:g} ms and > {options.min_rps:g} req/s: "
        + ("PASSED" if not problems else "FAILED: " + "; ".join(problems))
    )
    if options.summary_json:
        Path(options.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    if problems:
        environment.process_exit_code = 1
