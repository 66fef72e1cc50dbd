"""Open Inference Protocol (V2) の型（OpenAPI ドキュメント用）。

受信ボディの型検証は codecs.v2 の msgspec の構造体が行う。
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class V2ErrorResponse(BaseModel):
    """V2 のエラー応答。"""

    error: str = Field(examples=["unknown model: resnet"])


class ServerMetadataResponse(BaseModel):
    """GET /v2 の応答。"""

    name: str = Field(examples=["model-in-image"])
    version: str = Field(examples=["1.0.0"])
    extensions: list[str] = Field(examples=[["binary_tensor_data", "classification"]])


class LiveResponse(BaseModel):
    """liveness の応答。"""

    live: bool


class ReadyResponse(BaseModel):
    """readiness の応答。"""

    ready: bool


class TensorMetadata(BaseModel):
    """テンソルの名前・型・形（-1 はバッチ次元）。"""

    name: str
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(examples=[[-1, 4]])


class ModelMetadataResponse(BaseModel):
    """GET /v2/models/{name} の応答。"""

    name: str = Field(examples=["iris_svc"])
    versions: list[str] = Field(examples=[["1"]])
    platform: str = Field(examples=["onnx_onnxv1"])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    """入力テンソル：FP32（または FP64）、shape は [N, 特徴量数]。"""

    name: str = Field(description="モデルの入力名（入力が 1 つなのでどの名前でも受け付ける）")
    shape: list[int] = Field(examples=[[1, 4]])
    datatype: str = Field(examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size：バイナリ部でのこのテンソルのバイト数"
    )
    data: list[Any] | None = Field(
        default=None, description="行優先の平らなリスト、または [N][特徴量数] の入れ子のリスト"
    )


class RequestOutput(BaseModel):
    """要求する出力（probabilities・label・グラフの出力名）。"""

    name: str = Field(examples=["probabilities"])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data: true ならバイナリで返す。classification: k なら行ごとの"
        '上位 k クラスを "score:index:label" の BYTES [N, k] で返す（Triton の分類拡張）',
    )


class InferenceRequest(BaseModel):
    """推論リクエスト。"""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "1",
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 4],
                            "datatype": "FP32",
                            "data": [5.1, 3.5, 1.4, 0.2],
                        }
                    ],
                }
            ]
        }
    )

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_output: true なら全出力をバイナリで返す"
    )
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """出力テンソル（data は行優先の平らなリスト。バイナリなら parameters.binary_data_size）。"""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[float] | list[str] | None = None


class InferenceResponse(BaseModel):
    """推論の応答。"""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]
