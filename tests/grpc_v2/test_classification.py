"""gRPC の分類拡張（parameters["classification"].int64_param）：tritonclient.grpc と生のスタブ。

Iris は実サーバー（127.0.0.1）で、回帰・KMeans はプロセスの中のサービスで確かめる。期待値は
同じサーバーの REST の probabilities（分類なし）から作る。
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from model_in_image.api.grpc_v2.service import InferenceService
from model_in_image.codecs.v2_grpc import TYPED_FIELDS
from model_in_image.errors import ModelServerError
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as own_pb
from support.grpc_v2 import CALL_TIMEOUT, typed_request
from support.samples import IRIS_LABELS, MODEL, SPECIES
from support.servers import LiveServer
from support.v2_classification import UNCLASSIFIABLE, as_strings, expected_top_k, zoo_clients
from support.zoo import load_case, v2_tensors

ROWS = np.array([row for row, _ in SPECIES], dtype=np.float32)
IRIS = [IRIS_LABELS[str(i)] for i in range(3)]
Stub = service_pb2_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def probabilities(grpc_server: LiveServer) -> np.ndarray:
    """同じ 3 行の REST の probabilities（分類なし）。"""
    body = {
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": ROWS.tolist()}],
        "outputs": [{"name": "probabilities"}],
    }
    url = f"{grpc_server.base_url}/v2/models/{MODEL}/infer"
    response = httpx.post(url, json=body, timeout=CALL_TIMEOUT)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    return np.asarray(output["data"]).reshape(output["shape"])


@pytest.fixture(scope="module")
def input_name(client: triton.InferenceServerClient) -> str:
    name: str = client.get_model_metadata(MODEL).inputs[0].name
    return name


def triton_infer(
    client: triton.InferenceServerClient, input_name: str, *outputs: triton.InferRequestedOutput
) -> triton.InferResult:
    tensor = triton.InferInput(input_name, list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    return client.infer(MODEL, [tensor], outputs=list(outputs), client_timeout=CALL_TIMEOUT)


def test_server_metadata_lists_the_extension(client: triton.InferenceServerClient) -> None:
    assert "classification" in client.get_server_metadata().extensions


@pytest.mark.parametrize("k", [1, 2, 3, 50])
def test_tritonclient_class_count(
    client: triton.InferenceServerClient, input_name: str, probabilities: np.ndarray, k: int
) -> None:
    """tritonclient の class_count（raw の入出力）：上位 k の "score:index:label"。"""
    result = triton_infer(
        client, input_name, triton.InferRequestedOutput("probabilities", class_count=k)
    )
    values = result.as_numpy("probabilities")
    assert values.shape == (3, min(k, 3))
    assert result.get_output("probabilities").datatype == "BYTES"
    assert as_strings(values) == expected_top_k(probabilities, k, IRIS)


def test_typed_contents(stub: Stub, input_name: str, probabilities: np.ndarray) -> None:
    """型付きの contents で送れば bytes_contents で返る（分類しない出力と並べて）。"""
    request = typed_request(input_name, ROWS)
    output = request.outputs.add(name="graph:probabilities")
    output.parameters["classification"].int64_param = 2
    request.outputs.add(name="label")
    response = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert not response.raw_output_contents
    classified, label = response.outputs
    assert (classified.datatype, list(classified.shape)) == ("BYTES", [3, 2])
    items = [v.decode() for v in classified.contents.bytes_contents]
    assert [items[0:2], items[2:4], items[4:6]] == expected_top_k(probabilities, 2, IRIS)
    assert [v.decode() for v in label.contents.bytes_contents] == [n for _, n in SPECIES]


def _with_parameter(input_name: str, output: str, kind: str, value: object) -> pb.ModelInferRequest:
    request = typed_request(input_name, ROWS[:1])
    setattr(request.outputs.add(name=output).parameters["classification"], kind, value)
    return request


@pytest.mark.parametrize(
    ("kind", "value", "fragment"),
    [
        ("int64_param", 0, "must be a positive integer"),
        ("int64_param", -2, "must be a positive integer"),
        ("string_param", "2", "must be an int64_param"),
        ("bool_param", True, "must be an int64_param"),
        # Triton の proto だけにある型（このサーバーの proto では知らないフィールド）
        ("uint64_param", 2, "must be an int64_param"),
        ("double_param", 2.0, "must be an int64_param"),
    ],
)
def test_bad_count_is_invalid_argument(
    stub: Stub, input_name: str, kind: str, value: object, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_with_parameter(input_name, "probabilities", kind, value), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert f"output 'probabilities': parameter 'classification' {fragment}" in details


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ("label", "output 'label' is a BYTES tensor"),
        ("graph:label", "output 'graph:label' has one value per row"),
        ("nothing", "unknown output: 'nothing'"),
    ],
)
def test_outputs_that_cannot_be_classified_are_invalid_argument(
    client: triton.InferenceServerClient, input_name: str, output: str, fragment: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        triton_infer(client, input_name, triton.InferRequestedOutput(output, class_count=2))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert fragment in caught.value.message()


@pytest.fixture(scope="module")
def zoo() -> Iterator[Callable[[str], TestClient]]:
    """回帰と KMeans（プロセスの中のアプリ、名前で一度だけ起動）。"""
    with zoo_clients() as client_for:
        yield client_for


@pytest.mark.parametrize(("name", "output", "fragment"), UNCLASSIFIABLE)
def test_models_without_class_scores_are_refused(
    zoo: Callable[[str], TestClient], name: str, output: str, fragment: str
) -> None:
    case = load_case(name)
    request = own_pb.ModelInferRequest(model_name=name)
    for input_name, datatype, shape, data in v2_tensors(case, case.rows):
        tensor = request.inputs.add(name=input_name, datatype=datatype, shape=shape)
        getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(data)
    requested = request.outputs.add(name=output)
    requested.parameters["classification"].int64_param = 1
    service = InferenceService(zoo(name).app.state)  # type: ignore[attr-defined]
    with pytest.raises(ModelServerError) as caught:
        asyncio.run(service.ModelInfer(request, None))
    assert caught.value.status_code == 400
    assert f"output {output!r} {fragment}" in caught.value.message
    assert f"this {case.kind} model has no class-score output" in caught.value.message
