"""サーバー設定（環境変数から起動時に一度だけ読み込む）。"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model_in_image.model.kinds import ModelKind, Postprocess

# 既定のモデル：パッケージに同梱した Iris（どのフォルダーからでも、wheel からでも使える）。
# 元はリポジトリの models/（make train が両方を書き、テストが同一であることを確かめる）
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
# 廃止した設定の名前 → 今の名前（旧名もしばらく効く。使うと FutureWarning）
DEPRECATED_NAMES = {"max_batch_rows": "max_request_rows"}


class LogFormat(StrEnum):
    """ログの出力形式。"""

    TEXT = "TEXT"
    JSON = "JSON"


class LogLevel(StrEnum):
    """ログレベル。"""

    CRITICAL = "CRITICAL"
    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"
    DEBUG = "DEBUG"


class Settings(BaseSettings):
    """推論サーバーの設定。値が不正なら起動前に ValidationError で止まる。"""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        validate_default=True,
        protected_namespaces=(),
    )

    # 仕様書 §6 の環境変数
    model_filepath: Path = DEFAULT_MODEL_DIR / "iris_svc.onnx"
    # 未指定なら既定のモデルには同梱のラベル、ほかのモデルにはグラフ自身のクラス名を使う
    label_filepath: Path | None = None
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.TEXT

    # モデルの付帯情報
    model_card_filepath: Path | None = None
    model_sha256: str | None = None
    model_name: str | None = None
    sample_data: Annotated[list[Any] | None, NoDecode] = None
    # ロジットを確率にする後処理（none・softmax・sigmoid）と、種類の判定の上書き（空なら自動）
    model_postprocess: Postprocess = Postprocess.NONE
    model_kind: ModelKind | None = None

    # サーバー
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Open Inference Protocol の gRPC（KServe の慣例の 8081、0 で無効）。待ち受けアドレスは host
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    access_log: bool = True
    metrics_enabled: bool = True
    timeout_keep_alive: float = Field(default=5.0, gt=0)
    shutdown_drain_seconds: float = Field(default=0.0, ge=0, le=300)
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    graceful_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)

    # 入力の上限（1 リクエストの行数）
    max_request_rows: int = Field(default=1000, ge=1, le=1_000_000)
    # 旧名（MAX_BATCH_ROWS）：あれば max_request_rows に読み替えて警告する。読むのは検証だけ
    max_batch_rows: int | None = Field(default=None, ge=1, le=1_000_000, exclude=True)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    max_header_bytes: int = Field(default=65_536, ge=1024, le=16_777_216)
    max_url_bytes: int = Field(default=16_384, ge=256, le=16_777_216)
    # 受け入れ制御：ワーカーごとの処理待ちのリクエストがこれ以上なら 503（プローブは除く）
    max_in_flight_requests: int = Field(default=256, ge=1, le=1_000_000)

    # 適応バッチ（docs/batching.md）：モデルが動いている間に来たリクエストを 1 回の推論にまとめる。
    # 上限は行数。1 なら無効（キューもスレッドも使わない）。遅延 0 ならタイマーで待たない
    max_batch_size: int = Field(default=1, ge=1, le=65_536)
    max_batch_delay_ms: float = Field(default=0.0, ge=0.0, le=10_000.0)
    # モデルを待つリクエストの数の上限（超えれば 503 / RESOURCE_EXHAUSTED）
    max_batch_queue: int = Field(default=256, ge=1, le=1_000_000)

    # ONNX Runtime
    ort_intra_op_threads: int = Field(default=1, ge=1, le=256)

    # 観測（docs/observability.md）
    access_log_probes: bool = False
    prediction_monitoring: bool = True
    drift_window_rows: int = Field(default=1000, ge=10, le=1_000_000)
    prediction_log_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    prediction_log_url: str | None = None
    prediction_log_queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    # OpenTelemetry の標準の変数（残りの OTEL_* は SDK が起動時に読む）
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_sdk_disabled: bool = False

    @model_validator(mode="before")
    @classmethod
    def _deprecated_names(cls, data: Any) -> Any:
        """旧名（MAX_BATCH_ROWS）を新名に読み替えて警告する（両方あれば新名が勝つ）。"""
        if isinstance(data, dict):
            for old, new in DEPRECATED_NAMES.items():
                if data.get(old) not in (None, ""):
                    data = {new: data[old], **data}
                    warnings.warn(
                        f"{old.upper()} is deprecated; use {new.upper()}",
                        FutureWarning,
                        stacklevel=2,
                    )
        return data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """旧名の上書き（{"max_batch_rows": n}）も新名に読み替える（バッチ推論の CLI が使う）。"""
        if update:
            update = {DEPRECATED_NAMES.get(key, key): value for key, value in update.items()}
        return super().model_copy(update=update, deep=deep)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        """大文字小文字を区別しない。"""
        return value.upper() if isinstance(value, str) else value

    @field_validator("model_sha256", mode="before")
    @classmethod
    def _normalise_sha256(cls, value: Any) -> Any:
        """空文字は未指定として扱い、16 進 64 桁だけを受け付ける。"""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ValueError("MODEL_SHA256 must be 64 hexadecimal characters")
        return text

    @field_validator("label_filepath", "model_card_filepath", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        """空文字は未指定（ラベルの無いモデルのイメージは LABEL_FILEPATH を空にする）。"""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("model_name", mode="before")
    @classmethod
    def _empty_name_is_none(cls, value: Any) -> Any:
        """空文字はモデル名の未指定として扱う。"""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "prediction_log_url",
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        mode="before",
    )
    @classmethod
    def _http_url(cls, value: Any) -> Any:
        """空文字は未指定、それ以外は http:// か https:// の URL。"""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        if urlsplit(text).scheme not in ("http", "https") or not urlsplit(text).netloc:
            raise ValueError(f"must be an http:// or https:// URL, got {text!r}")
        return text

    @field_validator("sample_data", mode="before")
    @classmethod
    def _parse_sample(cls, value: Any) -> Any:
        """SAMPLE_DATA は JSON 文字列（例: [[5.1, 3.5, 1.4, 0.2]]）。"""
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"SAMPLE_DATA is not valid JSON: {exc}") from exc
        return value

    @field_validator("model_kind", mode="before")
    @classmethod
    def _empty_kind_is_auto(cls, value: Any) -> Any:
        """空文字と auto は自動の判定。"""
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model_postprocess", mode="before")
    @classmethod
    def _lower_postprocess(cls, value: Any) -> Any:
        """大文字小文字を区別しない（空なら none）。"""
        if isinstance(value, str):
            return value.strip().lower() or "none"
        return value

    @model_validator(mode="after")
    def _check_sample(self) -> Settings:
        """サンプルは 1 行以上。行がリストなら空でなく長さが揃う（型はモデルを読んでから）。"""
        rows = self.sample_data
        if rows is None:
            return self
        if not rows:
            raise ValueError("SAMPLE_DATA must be a non-empty list of rows")
        if any(isinstance(row, list) for row in rows):
            if not all(isinstance(row, list) and row for row in rows):
                raise ValueError("SAMPLE_DATA rows must all be non-empty lists (or all objects)")
            if len({len(row) for row in rows}) > 1:
                raise ValueError("SAMPLE_DATA rows must all have the same length")
        return self

    @model_validator(mode="after")
    def _check_ports(self) -> Settings:
        """gRPC と HTTP は別のポート。"""
        if self.grpc_port == self.port:
            raise ValueError(
                f"GRPC_PORT must differ from PORT ({self.port}); use 0 to disable gRPC"
            )
        return self

    @property
    def resolved_model_name(self) -> str:
        """モデル名（未指定ならモデルファイル名の stem）。"""
        return self.model_name or self.model_filepath.stem

    @property
    def tracing_enabled(self) -> bool:
        """OTLP の送り先が設定され、OTEL_SDK_DISABLED でないときだけトレースする。"""
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        return endpoint is not None and not self.otel_sdk_disabled

    @property
    def resolved_label_filepath(self) -> Path | None:
        """ラベルファイル（未指定で既定のモデルなら同梱のラベル、ほかは None）。"""
        if self.label_filepath is not None:
            return self.label_filepath
        if self.model_filepath.resolve() == (DEFAULT_MODEL_DIR / "iris_svc.onnx").resolve():
            return DEFAULT_MODEL_DIR / "label.json"
        return None

    @property
    def resolved_model_card_filepath(self) -> Path:
        """モデルカードのパス（未指定ならモデルと同じディレクトリの model_card.json）。"""
        return self.model_card_filepath or self.model_filepath.with_name("model_card.json")
