"""シード API の入出力型（OpenAPI 用）。検証そのものは codecs.seed と dataplane が行う。"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

SETOSA: list[float] = [5.1, 3.5, 1.4, 0.2]
PREDICT_EXAMPLE: dict[str, Any] = {"data": [SETOSA]}


class PredictRequest(BaseModel):
    """推論リクエスト：N 行 × 特徴量数の 2 次元配列。"""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [PREDICT_EXAMPLE, {"data": [SETOSA, [6.3, 2.9, 5.6, 1.8]]}]  # type: ignore[list-item]
        }
    )

    data: list[list[float]] = Field(
        min_length=1, description="特徴量の 2 次元配列 (N, 特徴量数)。NaN・無限大・真偽値は不可。"
    )


class ProbabilityResponse(BaseModel):
    """各クラスの確率（1 行なら [p0, p1, ...]、N 行なら N 個のリスト）。"""

    prediction: list[float] | list[list[float]] = Field(
        examples=[[0.9709315896034241, 0.015583082102239132, 0.013485366478562355]]
    )


class LabelResponse(BaseModel):
    """最尤クラスのラベル名（1 行なら文字列、N 行ならリスト）。"""

    prediction: str | list[str] = Field(examples=["setosa"])


class LabelMapResponse(RootModel[dict[str, str]]):
    """クラス番号（文字列）からラベル名への対応。"""

    model_config = ConfigDict(json_schema_extra={"examples": [{"0": "setosa", "1": "versicolor"}]})


class HealthResponse(BaseModel):
    """シードのヘルスチェック応答。"""

    health: str = Field(examples=["ok"])


class ProbeResponse(BaseModel):
    """liveness / readiness の応答。"""

    status: str = Field(examples=["ok"])


class MetadataResponse(BaseModel):
    """モデルから導いたメタデータ。"""

    model_config = ConfigDict(protected_namespaces=())

    data_type: str = Field(examples=["float32"])
    data_structure: str = Field(examples=["(1,4)"])
    data_sample: list[list[float]] = Field(examples=[[SETOSA]])
    prediction_type: str = Field(examples=["float32"])
    prediction_structure: str = Field(examples=["(1,3)"])
    prediction_sample: list[float] | list[list[float]]
    model_name: str
    model_sha256: str
    model_file: str
    output_kind: str
    labels: list[str]
    heldout_accuracy: float | None


class ErrorResponse(BaseModel):
    """エラー応答（detail に理由）。"""

    detail: str = Field(examples=["Internal server error"])


class ValidationErrorItem(BaseModel):
    """422 の detail の 1 件（FastAPI と同じ形）。"""

    type: str
    loc: list[str | int]
    msg: str


class ValidationErrorResponse(BaseModel):
    """422 応答。"""

    detail: list[ValidationErrorItem]
