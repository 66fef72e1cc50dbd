"""Prometheus メトリクス（prometheus-client）。

ワーカーが複数のときは prometheus-client のマルチプロセスモード
（PROMETHEUS_MULTIPROC_DIR、server.serve が設定）で全ワーカーの合計を返す。
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
INFERENCE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.005, 0.01, 0.05)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


def multiprocess_dir() -> str | None:
    """マルチプロセスモードのディレクトリ（無ければ単一プロセス）。"""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """アプリごとのメトリクス一式。ラベルの子は初回だけ作ってキャッシュする。"""

    def __init__(self, *, model_name: str, model_sha256: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "model_in_image_requests",
            "HTTP リクエスト数",
            ["route", "method", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "model_in_image_request_duration_seconds",
            "HTTP リクエストの処理時間",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "model_in_image_requests_in_flight",
            "処理中のリクエスト数",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.inference = Histogram(
            "model_in_image_inference_duration_seconds",
            "ONNX Runtime の推論時間",
            buckets=INFERENCE_BUCKETS,
            registry=reg,
        )
        self.batch = Histogram(
            "model_in_image_inference_batch_rows",
            "推論 1 回の行数",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        info = Gauge(
            "model_in_image_model_info",
            "提供中のモデル（値は常に 1）",
            ["name", "sha256", "version"],
            registry=reg,
            multiprocess_mode="max",
        )
        info.labels(model_name, model_sha256, version).set(1)
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """リクエスト 1 件を記録する。"""
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.inc()
        lat = self._latency_children.get((route, method))
        if lat is None:
            lat = self._latency_children[(route, method)] = self.latency.labels(route, method)
        lat.observe(seconds)

    def observe_inference(self, rows: int, seconds: float) -> None:
        """推論 1 回の時間と行数を記録する。"""
        self.inference.observe(seconds)
        self.batch.observe(rows)

    def render(self) -> bytes:
        """Prometheus のテキスト形式で出力する。"""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
