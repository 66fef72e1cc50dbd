"""Settings：既定値・環境変数・不正値での即時失敗。"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from model_in_image.settings import DEFAULT_MODEL_DIR, LogFormat, LogLevel, Settings

SHA = "ab" * 32


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """設定に効く環境変数を消した monkeypatch。"""
    return clean_env


def test_defaults(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.model_filepath == DEFAULT_MODEL_DIR / "iris_svc.onnx"
    assert s.label_filepath is None
    # 既定のモデルにだけ同梱のラベルを使う（ほかのモデルに Iris の名前を付けない）
    assert s.resolved_label_filepath == DEFAULT_MODEL_DIR / "label.json"
    assert Settings(model_filepath=Path("/opt/m/model.onnx")).resolved_label_filepath is None
    assert s.log_level is LogLevel.INFO
    assert s.log_format is LogFormat.TEXT
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8000, 1)
    assert s.max_request_rows == 1000
    assert (s.max_batch_size, s.max_batch_delay_ms, s.max_batch_queue) == (1, 0.0, 256)
    assert s.max_body_bytes == 1_048_576
    assert s.ort_intra_op_threads == 1
    assert s.model_sha256 is None
    assert s.sample_data is None
    assert s.model_card_filepath is None
    assert s.access_log is True
    assert s.access_log_probes is False
    assert s.prediction_monitoring is True
    assert s.drift_window_rows == 1000
    assert s.prediction_log_sample_rate == 0.0
    assert s.prediction_log_url is None
    assert s.tracing_enabled is False
    assert s.resolved_model_name == "iris_svc"
    assert s.resolved_model_card_filepath == DEFAULT_MODEL_DIR / "model_card.json"


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("MODEL_FILEPATH", "/opt/m/model.onnx", "model_filepath", Path("/opt/m/model.onnx")),
        ("LABEL_FILEPATH", "/opt/m/labels.json", "label_filepath", Path("/opt/m/labels.json")),
        ("LOG_LEVEL", "debug", "log_level", LogLevel.DEBUG),
        ("LOG_LEVEL", "Warning", "log_level", LogLevel.WARNING),
        ("LOG_FORMAT", "json", "log_format", LogFormat.JSON),
        ("LOG_FORMAT", "TEXT", "log_format", LogFormat.TEXT),
        ("HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("PORT", "9000", "port", 9000),
        ("GRPC_PORT", "9001", "grpc_port", 9001),
        ("GRPC_PORT", "0", "grpc_port", 0),
        ("WORKERS", "4", "workers", 4),
        ("MAX_REQUEST_ROWS", "50", "max_request_rows", 50),
        ("MAX_BATCH_SIZE", "64", "max_batch_size", 64),
        ("MAX_BATCH_DELAY_MS", "2.5", "max_batch_delay_ms", 2.5),
        ("MAX_BATCH_QUEUE", "8", "max_batch_queue", 8),
        ("MAX_BODY_BYTES", "4096", "max_body_bytes", 4096),
        ("ORT_INTRA_OP_THREADS", "2", "ort_intra_op_threads", 2),
        ("MODEL_SHA256", SHA, "model_sha256", SHA),
        ("MODEL_SHA256", SHA.upper(), "model_sha256", SHA),
        ("MODEL_SHA256", f"  {SHA}\\n", "model_sha256", SHA),
        ("MODEL_SHA256", "", "model_sha256", None),
        ("SAMPLE_DATA", "[[5.1, 3.5, 1.4, 0.2]]", "sample_data", [[5.1, 3.5, 1.4, 0.2]]),
        ("SAMPLE_DATA", "[[1, 2], [3, 4]]", "sample_data", [[1.0, 2.0], [3.0, 4.0]]),
        ("SAMPLE_DATA", " ", "sample_data", None),
        ("MODEL_NAME", "iris", "model_name", "iris"),
        ("MODEL_NAME", "", "model_name", None),
        (
            "MODEL_CARD_FILEPATH",
            "/opt/m/card.json",
            "model_card_filepath",
            Path("/opt/m/card.json"),
        ),
        ("ACCESS_LOG", "false", "access_log", False),
        ("ACCESS_LOG_PROBES", "true", "access_log_probes", True),
        ("PREDICTION_MONITORING", "false", "prediction_monitoring", False),
        ("DRIFT_WINDOW_ROWS", "500", "drift_window_rows", 500),
        ("PREDICTION_LOG_SAMPLE_RATE", "0.25", "prediction_log_sample_rate", 0.25),
        (
            "PREDICTION_LOG_URL",
            "http://127.0.0.1:9/e",
            "prediction_log_url",
            "http://127.0.0.1:9/e",
        ),
        ("PREDICTION_LOG_URL", " ", "prediction_log_url", None),
        ("PREDICTION_LOG_QUEUE_SIZE", "5", "prediction_log_queue_size", 5),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "tracing_enabled", True),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c:4318/v1/traces", "tracing_enabled", True),
    ],
)
def test_reads_environment(
    env: pytest.MonkeyPatch, name: str, value: str, field: str, expected: Any
) -> None:
    env.setenv(name, value.replace("\\n", "\n"))
    assert getattr(Settings(), field) == expected


def test_grpc_listens_on_8081_by_default(env: pytest.MonkeyPatch) -> None:
    env.delenv("GRPC_PORT")  # テストの環境は gRPC を切っている（support.env）
    assert Settings().grpc_port == 8081


def test_lower_case_variable_names(env: pytest.MonkeyPatch) -> None:
    env.setenv("port", "8123")
    assert Settings().port == 8123


def test_resolved_names_follow_the_model(env: pytest.MonkeyPatch) -> None:
    env.setenv("MODEL_FILEPATH", "/opt/m/my_model.onnx")
    s = Settings()
    assert s.resolved_model_name == "my_model"
    assert s.resolved_model_card_filepath == Path("/opt/m/model_card.json")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "http"),
        ("GRPC_PORT", "-1"),
        ("GRPC_PORT", "65536"),
        ("GRPC_PORT", "8000"),  # PORT と同じ
        ("WORKERS", "0"),
        ("LOG_FORMAT", "XML"),
        ("LOG_LEVEL", "VERBOSE"),
        ("MODEL_SHA256", "xyz"),
        ("MODEL_SHA256", "g" * 64),
        ("MODEL_SHA256", "ab" * 31),
        ("SAMPLE_DATA", "not-json"),
        ("SAMPLE_DATA", "[[1, 2], [3]]"),
        ("SAMPLE_DATA", "[]"),
        ("SAMPLE_DATA", "[[]]"),
        ("SAMPLE_DATA", "[[1, 2], 3]"),
        ("SAMPLE_DATA", '[{"a": 1}, [1]]'),
        ("MAX_REQUEST_ROWS", "0"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_DELAY_MS", "-1"),
        ("MAX_BATCH_QUEUE", "0"),
        ("MAX_BODY_BYTES", "10"),
        ("ORT_INTRA_OP_THREADS", "0"),
        ("DRIFT_WINDOW_ROWS", "1"),
        ("PREDICTION_LOG_SAMPLE_RATE", "1.5"),
        ("PREDICTION_LOG_SAMPLE_RATE", "-0.1"),
        ("PREDICTION_LOG_URL", "file:///tmp/events"),
        ("PREDICTION_LOG_QUEUE_SIZE", "0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ],
)
def test_invalid_values_fail_fast(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert name.lower() in str(info.value).lower()


def test_otel_sdk_disabled_turns_tracing_off(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    env.setenv("OTEL_SDK_DISABLED", "true")
    assert Settings().tracing_enabled is False


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]


def test_old_row_cap_name_still_works_with_a_warning(env: pytest.MonkeyPatch) -> None:
    """MAX_BATCH_ROWS（旧名）は MAX_REQUEST_ROWS として効き、FutureWarning を出す。"""
    env.setenv("MAX_BATCH_ROWS", "50")
    with pytest.warns(FutureWarning, match="MAX_BATCH_ROWS is deprecated; use MAX_REQUEST_ROWS"):
        assert Settings().max_request_rows == 50
    env.setenv("MAX_REQUEST_ROWS", "60")  # 両方あれば新名
    with pytest.warns(FutureWarning):
        assert Settings().max_request_rows == 60
    env.setenv("MAX_BATCH_ROWS", "0")
    with pytest.warns(FutureWarning), pytest.raises(ValidationError, match="max_batch_rows"):
        Settings()


def test_old_row_cap_name_in_model_copy(env: pytest.MonkeyPatch) -> None:
    """model_copy(update={"max_batch_rows": n}) も新名に読み替える（バッチ推論の CLI）。"""
    assert Settings().model_copy(update={"max_batch_rows": 7}).max_request_rows == 7
