"""Prometheus メトリクス（prometheus-client）。

ワーカーが複数のときは prometheus-client のマルチプロセスモード
（PROMETHEUS_MULTIPROC_DIR、server.serve が設定）で全ワーカーの合計を返す。

リクエストごとには観測値をリストに積むだけにし、prometheus-client への反映は
まとめて行う（スクレイプ時・1 秒ごと・一定件数ごと）。1 件ずつ observe すると
ロックとバケット走査で 1 リクエストあたり 10 µs 以上かかるため。
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
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
QUEUE_WAIT_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
FLUSH_EVERY = 4096


def observe_many(histogram: Any, values: Sequence[float] | np.ndarray[Any, Any]) -> None:
    """Histogram.observe を値の数だけ呼ぶのと同じ結果を、バケットごとに 1 回の加算で得る。

    prometheus-client の Histogram の内部（_upper_bounds, _buckets, _sum）に依存する。
    値は配列のまま扱う（リストにすると 6 万個で数 ms かかり、その間イベントループが止まる）。
    """
    array = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(histogram._upper_bounds, array, side="left")
    for bucket, count in enumerate(np.bincount(index, minlength=len(histogram._buckets))):
        if count:
            histogram._buckets[bucket].inc(int(count))
    histogram._sum.inc(float(array.sum()))


def mark_worker_dead(pid: int) -> None:
    """死んだワーカーのゲージ（livesum など）のファイルを消す（カウンタは合計に残る）。"""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class MetricsExtension(Protocol):
    """メトリクスに加わる部品（予測の監視など）：まとめての反映と、出力時の書き換え。"""

    def flush(self) -> None:
        """積んだ観測値を反映する（Metrics.flush と同じ時に呼ばれる）。"""

    def transform(self, families: list[Any]) -> list[Any]:
        """出力する直前のメトリクスを書き換える（全ワーカーの合計から導く値など）。"""


class _Exposition:
    """出力するメトリクス：source（レジストリか全ワーカーの合算）を拡張が書き換えたもの。"""

    def __init__(self, source: Any, extensions: Sequence[MetricsExtension]) -> None:
        self.source = source
        self.extensions = extensions

    def collect(self) -> list[Any]:
        """generate_latest が呼ぶ。"""
        families = list(self.source.collect())
        for extension in self.extensions:
            families = extension.transform(families)
        return families


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
            "推論 1 回の行数（適応バッチではまとめた行数）",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        # 適応バッチ（MAX_BATCH_SIZE > 1）のときだけ観測値が入る
        self.batch_requests = Histogram(
            "model_in_image_batch_requests",
            "適応バッチで推論 1 回にまとめたリクエストの数",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "model_in_image_batch_queue_wait_seconds",
            "適応バッチでリクエストがモデルを待った時間（着いてから推論が始まるまで）",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=reg,
        )
        rejections = Counter(
            "model_in_image_requests_rejected",
            "受け入れ制御（MAX_IN_FLIGHT_REQUESTS）で断ったリクエスト数"
            "（HTTP は 503、gRPC は RESOURCE_EXHAUSTED）",
            ["protocol"],
            registry=reg,
        )
        # 両方の系列を 0 から出しておく（最初の拒否の前から rate() が使える）
        self._rejections_http = rejections.labels("http")
        self._rejections_grpc = rejections.labels("grpc")
        info = Gauge(
            "model_in_image_model_info",
            "提供中のモデル（値は常に 1）",
            ["name", "sha256", "version"],
            registry=reg,
            multiprocess_mode="max",
        )
        info.labels(model_name, model_sha256, version).set(1)
        self.active = 0  # 処理中のリクエスト数（反映時に in_flight へ）
        # 受け入れ制御で断った数（反映時に rejected_total{protocol} へ）
        self.rejected = 0  # HTTP
        self.rejected_grpc = 0
        # 観測値は GC の追跡しない形（array と件数の辞書）で積む。リクエストごとのタプルを
        # リストに溜めた版では、負荷の最中に完全 GC（約 40 ms）が走り、1 ワーカーの p99 が跳ねた
        self._counts: dict[tuple[str, str, int], int] = {}
        self._durations: dict[tuple[str, str], array[float]] = {}
        self._inference_seconds: array[float] = array("d")
        self._inference_rows: array[float] = array("d")
        self._batch_requests: array[float] = array("d")
        self._queue_waits: array[float] = array("d")
        self._pending = 0
        self.extensions: list[MetricsExtension] = []

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """リクエスト 1 件を積む。"""
        key = (route, method, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        series = self._durations.get((route, method))
        if series is None:
            series = self._durations[(route, method)] = array("d")
        series.append(seconds)
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def observe_inference(self, rows: int, seconds: float) -> None:
        """推論 1 回の行数と時間を積む。"""
        self._inference_rows.append(rows)
        self._inference_seconds.append(seconds)

    def observe_batch(self, requests: int, waits: Sequence[float]) -> None:
        """適応バッチの推論 1 回：まとめたリクエストの数と、それぞれの待ち時間を積む。"""
        self._batch_requests.append(requests)
        self._queue_waits.extend(waits)

    def flush(self) -> None:
        """積んだ観測値を prometheus-client のメトリクスへまとめて反映する。"""
        counts, self._counts = self._counts, {}
        durations, self._durations = self._durations, {}
        seconds, self._inference_seconds = self._inference_seconds, array("d")
        rows, self._inference_rows = self._inference_rows, array("d")
        requests, self._batch_requests = self._batch_requests, array("d")
        waits, self._queue_waits = self._queue_waits, array("d")
        self._pending = 0
        self.in_flight.set(self.active)
        rejected, self.rejected = self.rejected, 0
        if rejected:
            self._rejections_http.inc(rejected)
        rejected, self.rejected_grpc = self.rejected_grpc, 0
        if rejected:
            self._rejections_grpc.inc(rejected)
        for (route, method, status), count in counts.items():
            self.requests.labels(route, method, str(status)).inc(count)
        for (route, method), values in durations.items():
            observe_many(self.latency.labels(route, method), values)
        if seconds:
            observe_many(self.inference, seconds)
            observe_many(self.batch, rows)
        if requests:
            observe_many(self.batch_requests, requests)
        if waits:
            observe_many(self.queue_wait, waits)
        for extension in self.extensions:
            extension.flush()

    def render(self) -> bytes:
        """Prometheus のテキスト形式で出力する。"""
        self.flush()
        directory = multiprocess_dir()
        source: Any = self.registry
        if directory is not None:
            source = multiprocess.MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(_Exposition(source, self.extensions))
