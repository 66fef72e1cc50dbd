"""動物園のモデルを V2 の gRPC（inference.GRPCInferenceService）で：型付きの contents で送る。

サービスはアプリと同じ状態（データプレーン）の上でプロセスの中で呼ぶ（ネットワークなし）。
ワイヤーの変換（codecs.v2_grpc）と出力の一覧は実サーバーと同じ。
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_in_image.api.grpc_v2.service import InferenceService
from model_in_image.codecs.v2_grpc import TYPED_FIELDS
from model_in_image.errors import ModelServerError
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb
from support.zoo import Serve, ZooCase, case_names, load_case, v2_tensors

PROBABILITY_KINDS = ("classifier", "probabilities")


def grpc_request(case: ZooCase, rows: list[Any]) -> pb.ModelInferRequest:
    """型付きの contents の推論リクエスト（BYTES は UTF-8 のバイト列）。"""
    request = pb.ModelInferRequest(model_name=case.name)
    for name, datatype, shape, data in v2_tensors(case, rows):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        values = [v.encode() for v in data] if datatype == "BYTES" else data
        getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(values)
    return request


def grpc_infer(client: TestClient, request: pb.ModelInferRequest) -> dict[str, Any]:
    """サービスの ModelInfer を呼び、出力を名前 → 形どおりの配列にする。"""
    service = InferenceService(client.app.state)  # type: ignore[attr-defined]
    response = asyncio.run(service.ModelInfer(request, None))
    outputs = {}
    for tensor in response.outputs:
        values = list(getattr(tensor.contents, TYPED_FIELDS.get(tensor.datatype, "fp32_contents")))
        if tensor.datatype == "BYTES":
            values = [v.decode() for v in values]
        outputs[tensor.name] = np.asarray(values).reshape(list(tensor.shape))
    return outputs


@pytest.mark.parametrize("name", case_names())
def test_grpc_infer_matches_the_framework(serve: Serve, name: str) -> None:
    """gRPC の推論は REST と同じ値とクラス名（フレームワーク自身の予測）を返す。"""
    case = load_case(name)
    outputs = grpc_infer(serve(name), grpc_request(case, case.rows))
    first = next(iter(outputs))
    primary = "probabilities" if case.kind in PROBABILITY_KINDS else first
    rtol, atol = case.tolerance
    want = case.prediction.values
    np.testing.assert_allclose(outputs[primary].reshape(want.shape), want, rtol=rtol, atol=atol)
    if case.labels is not None:
        assert outputs["label"].tolist() == case.labels.values
    for output, expected in case.extra_outputs.items():
        np.testing.assert_allclose(outputs[output], expected.values, rtol=rtol, atol=atol)


def test_grpc_token_outside_the_vocabulary_is_refused(serve: Serve) -> None:
    """語彙の外のトークン ID（Gather の範囲外）は 400 の誤り（500 ではない）。"""
    case = load_case("torch_embedding")
    row = [40, *case.rows[0][1:]]
    with pytest.raises(ModelServerError, match="out of data bounds") as caught:
        grpc_infer(serve(case.name), grpc_request(case, [row]))
    assert caught.value.status_code == 400
