"""予測ログ：抽出したリクエストの入力と出力を CloudEvents（KServe の推論ロガーのイベント型）で書く。

リクエストの中では抽出して上限付きのキューに入れるだけ（満杯なら捨てて数える）。別スレッドが
JSON にして、標準出力（1 行 1 イベント）か PREDICTION_LOG_URL（HTTP POST、structured mode の
application/cloudevents+json）へ送る。送り先が遅くても壊れていても、リクエストは待たず失敗しない。
"""

from __future__ import annotations

import http.client
import logging
import queue
import random
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import orjson
from prometheus_client import CollectorRegistry, Counter

from model_in_image.observability.request_id import CURRENT
from model_in_image.runtime import FloatArray

logger = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
CONTENT_TYPE = "application/cloudevents+json"
SINK_TIMEOUT_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 2.0
WARNING_INTERVAL_SECONDS = 60.0
# 古くなった keep-alive 接続で送れなかったときだけ、つなぎ直して 1 回だけ送り直す
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True, slots=True)
class Sample:
    """抽出した推論 1 回（イベントにするのは別スレッド）。"""

    request_id: str
    traceparent: str | None
    time: float
    features: FloatArray
    probabilities: FloatArray


def cloudevents(sample: Sample, *, model_name: str, labels: Sequence[str]) -> list[dict[str, Any]]:
    """推論 1 回を request と response の 2 つのイベントにする（id は同じリクエスト ID）。"""
    stamp = datetime.fromtimestamp(sample.time, UTC).isoformat(timespec="milliseconds")
    common: dict[str, Any] = {
        "specversion": "1.0",
        "id": sample.request_id,
        "source": f"model-in-image/{model_name}",
        "time": stamp.replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "inferenceservicename": model_name,
    }
    if sample.traceparent is not None:
        common["traceparent"] = sample.traceparent
    values = sample.probabilities.tolist()
    response: dict[str, Any] = {"predictions": values}
    # クラス名のある [N, C] の値だけ最尤クラスを添える（回帰・テンソルは値だけ）
    if labels and values and isinstance(values[0], list) and len(values[0]) == len(labels):
        response["labels"] = [labels[row.index(max(row))] for row in values]
    return [
        {**common, "type": REQUEST_TYPE, "data": {"instances": sample.features.tolist()}},
        {**common, "type": RESPONSE_TYPE, "data": response},
    ]


class Sink(Protocol):
    """イベントの送り先。"""

    def send(self, event: bytes) -> None:
        """イベント 1 つを送る（失敗は例外）。"""

    def close(self) -> None:
        """後始末。"""


class StreamSink:
    """1 行 1 イベントでストリーム（既定は標準出力）に書く。"""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer

    def send(self, event: bytes) -> None:
        """1 行書く。"""
        self.stream.write(event + b"\n")
        self.stream.flush()

    def close(self) -> None:
        """何もしない（標準出力は閉じない）。"""


class HttpSink:
    """HTTP POST で送る（keep-alive の接続を使い回す）。"""

    def __init__(self, url: str, timeout: float = SINK_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self._timeout)
        return self._connection

    def send(self, event: bytes) -> None:
        """POST する（2xx 以外は例外）。"""
        for attempt in range(2):
            connection = self._connect()
            try:
                connection.request("POST", self._path, event, {"Content-Type": CONTENT_TYPE})
                response = connection.getresponse()
                response.read()
            except _STALE_CONNECTION:
                self.close()
                if attempt:
                    raise
                continue
            except (OSError, http.client.HTTPException):
                self.close()
                raise
            if not 200 <= response.status < 300:
                raise OSError(f"prediction log sink answered HTTP {response.status}")
            return

    def close(self) -> None:
        """接続を閉じる。"""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class PredictionLog:
    """抽出・キュー・送信スレッド。observe がデータプレーンのリスナー。"""

    def __init__(
        self,
        sink: Sink,
        *,
        sample_rate: float,
        queue_size: int,
        model_name: str,
        labels: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.sink = sink
        self.sample_rate = sample_rate
        self.model_name = model_name
        self.labels = tuple(labels)
        self._queue: queue.Queue[Sample] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._abandoned = threading.Event()
        self._warned_at = -WARNING_INTERVAL_SECONDS
        self._thread: threading.Thread | None = None
        self._random = random.random
        dropped = Counter(
            "model_prediction_log_dropped",
            "予測ログに書けなかった推論の数（queue_full・sink_error・shutdown）",
            ["reason"],
            registry=registry,
        )
        self._queue_full = dropped.labels("queue_full")
        self._sink_error = dropped.labels("sink_error")
        self._shutdown = dropped.labels("shutdown")
        self.events = Counter(
            "model_prediction_log_events", "予測ログに書いたイベントの数", registry=registry
        )

    def observe(self, features: FloatArray, probabilities: FloatArray) -> None:
        """抽出に当たればキューに入れる（満杯なら捨てて数える。待たない）。"""
        if self._random() >= self.sample_rate:
            return
        exchange = CURRENT.get()
        if exchange is None:
            request_id, traceparent = uuid.uuid4().hex, None
        else:
            parent = exchange.parent
            request_id = exchange.request_id
            traceparent = parent.header if parent is not None else None
        try:
            self._queue.put_nowait(
                Sample(request_id, traceparent, time.time(), features, probabilities)
            )
        except queue.Full:
            self._queue_full.inc()

    def start(self) -> None:
        """送信スレッドを始める。"""
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """残りを送り終えるまで最大 timeout 秒待つ。送れなかった分は shutdown として数える。"""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._abandoned.set()
        left = self._queue.qsize()
        if left:
            self._shutdown.inc(left)
        self.sink.close()

    def _run(self) -> None:
        """キューが空になり停止を頼まれるまで送る（stop が待ちきれなければそこで止める）。"""
        while not self._abandoned.is_set():
            try:
                sample = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            self._write(sample)

    def _write(self, sample: Sample) -> None:
        try:
            for event in cloudevents(sample, model_name=self.model_name, labels=self.labels):
                self.sink.send(orjson.dumps(event))
                self.events.inc()
        except Exception as exc:  # 送り先の誤りは数えて続ける（リクエストには影響しない）
            self._sink_error.inc()
            now = time.monotonic()
            if (
                now - self._warned_at >= WARNING_INTERVAL_SECONDS
            ):  # 送り先が落ちてもログを溢れさせない
                self._warned_at = now
                logger.warning("prediction log: events not delivered (counted in metrics): %s", exc)
