"""tritonclient.grpc で実サーバーの gRPC を呼ぶ：ヘルス・メタデータ・推論（型付き / raw）。

確率は同じ行を REST の /predict に送った結果と 1e-6 以内で一致すること。
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from support.grpc_v2 import CALL_TIMEOUT, typed_request
from support.samples import MODEL, SPECIES
from support.servers import LiveServer

ROWS = np.array([row for row, _ in SPECIES], dtype=np.float32)
LABELS = [label for _, label in SPECIES]
TOLERANCE = 1e-6
Stub = service_pb2_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def rest_probabilities(grpc_server: LiveServer) -> np.ndarray:
    """同じ 3 行を REST の /predict に送った確率。"""
    response = httpx.post(
        f"{grpc_server.base_url}/predict", json={"data": ROWS.tolist()}, timeout=CALL_TIMEOUT
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["prediction"], dtype=np.float64)


@pytest.fixture(scope="module")
def input_name(client: triton.InferenceServerClient) -> str:
    """メタデータが示す入力名。"""
    name: str = client.get_model_metadata(MODEL).inputs[0].name
    return name


def test_live_ready_and_model_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")


def test_server_metadata(client: triton.InferenceServerClient, grpc_server: LiveServer) -> None:
    metadata = client.get_server_metadata(as_json=True)
    rest = httpx.get(f"{grpc_server.base_url}/v2", timeout=CALL_TIMEOUT).json()
    assert metadata == rest
    assert metadata["name"] == "model-in-image"


def test_model_metadata_matches_rest(
    client: triton.InferenceServerClient, grpc_server: LiveServer
) -> None:
    metadata = client.get_model_metadata(MODEL, model_version="1", as_json=True)
    rest = httpx.get(f"{grpc_server.base_url}/v2/models/{MODEL}", timeout=CALL_TIMEOUT).json()
    # proto3 の JSON は int64 を文字列にする
    for tensor in (*metadata["inputs"], *metadata["outputs"]):
        tensor["shape"] = [int(dim) for dim in tensor["shape"]]
    assert metadata == rest
    (tensor,) = metadata["inputs"]
    assert (tensor["datatype"], tensor["shape"]) == ("FP32", [-1, 4])


def test_infer_raw_contents_like_rest(
    client: triton.InferenceServerClient, input_name: str, rest_probabilities: np.ndarray
) -> None:
    """tritonclient の既定：raw_input_contents で送り、raw_output_contents で受け取る。"""
    tensor = triton.InferInput(input_name, list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer(MODEL, [tensor], request_id="req-42", client_timeout=CALL_TIMEOUT)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-42", MODEL, "1")
    assert len(response.raw_output_contents) == 2
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities, rest_probabilities, rtol=0, atol=TOLERANCE)
    labels = result.as_numpy("label")
    assert labels is not None
    assert [v.decode() for v in labels.tolist()] == LABELS


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_infer_typed_contents_like_rest(
    stub: Stub, input_name: str, rest_probabilities: np.ndarray, datatype: str
) -> None:
    """型付きの contents で送ると、型付きの contents で返る。"""
    request = typed_request(input_name, ROWS, datatype, id="typed-1")
    response = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert response.id == "typed-1"
    assert not response.raw_output_contents
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs) == ["probabilities", "label"]
    proba = outputs["probabilities"]
    assert (proba.datatype, list(proba.shape)) == ("FP32", [3, 3])
    values = np.asarray(proba.contents.fp32_contents).reshape(3, 3)
    np.testing.assert_allclose(values, rest_probabilities, rtol=0, atol=TOLERANCE)
    assert (outputs["label"].datatype, list(outputs["label"].shape)) == ("BYTES", [3])
    assert [v.decode() for v in outputs["label"].contents.bytes_contents] == LABELS


def test_typed_and_raw_give_the_same_probabilities(
    client: triton.InferenceServerClient, stub: Stub, input_name: str
) -> None:
    tensor = triton.InferInput(input_name, list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    raw = client.infer(MODEL, [tensor], client_timeout=CALL_TIMEOUT).as_numpy("probabilities")
    typed = stub.ModelInfer(typed_request(input_name, ROWS), timeout=CALL_TIMEOUT)
    values = np.asarray(typed.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(3, 3)
    np.testing.assert_array_equal(values, raw)


def test_no_id_gives_an_empty_id(stub: Stub, input_name: str) -> None:
    response = stub.ModelInfer(typed_request(input_name, ROWS[:1]), timeout=CALL_TIMEOUT)
    assert response.id == ""


def test_requested_output_only(client: triton.InferenceServerClient, input_name: str) -> None:
    tensor = triton.InferInput(input_name, [1, 4], "FP32")
    tensor.set_data_from_numpy(ROWS[:1])
    outputs = [triton.InferRequestedOutput("label")]
    result = client.infer(MODEL, [tensor], outputs=outputs, client_timeout=CALL_TIMEOUT)
    assert [o.name for o in result.get_response().outputs] == ["label"]
    assert result.as_numpy("probabilities") is None
    labels = result.as_numpy("label")
    assert labels is not None
    assert labels.tolist() == [b"setosa"]


def test_typed_input_with_binary_data_output_gives_raw(stub: Stub, input_name: str) -> None:
    """parameters の binary_data_output（リクエスト全体）で raw の出力を求める。"""
    request = typed_request(input_name, ROWS)
    request.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert len(response.raw_output_contents) == 2
    assert not response.outputs[0].contents.fp32_contents
    proba = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(3, 3)
    assert proba.argmax(axis=1).tolist() == [0, 1, 2]
    labels = deserialize_bytes_tensor(response.raw_output_contents[1])
    assert [v.decode() for v in labels.tolist()] == LABELS


def test_output_binary_data_parameter_gives_raw_for_all_outputs(
    stub: Stub, input_name: str
) -> None:
    """出力ごとの binary_data。raw_output_contents は全出力か、どれも無しか（仕様）。"""
    request = typed_request(input_name, ROWS[:1])
    request.outputs.add(name="label")
    request.outputs.add(name="probabilities").parameters["binary_data"].bool_param = True
    response = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert [o.name for o in response.outputs] == ["label", "probabilities"]
    assert len(response.raw_output_contents) == 2
    assert deserialize_bytes_tensor(response.raw_output_contents[0]).tolist() == [b"setosa"]


def test_raw_input_with_binary_data_output_false_gives_typed(
    stub: Stub, input_name: str, rest_probabilities: np.ndarray
) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=input_name, datatype="FP32", shape=[3, 4])
    request.raw_input_contents.append(ROWS.tobytes())
    request.parameters["binary_data_output"].bool_param = False
    response = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert not response.raw_output_contents
    values = np.asarray(response.outputs[0].contents.fp32_contents).reshape(3, 3)
    np.testing.assert_allclose(values, rest_probabilities, rtol=0, atol=TOLERANCE)


def test_unknown_parameters_are_ignored(stub: Stub, input_name: str) -> None:
    """知らない parameters（Triton だけの double / uint64 も）は読まずに推論する。"""
    request = typed_request(input_name, ROWS[:1])
    request.parameters["priority"].int64_param = 3
    request.parameters["sequence_id"].uint64_param = 7
    request.parameters["temperature"].double_param = 0.5
    request.parameters["note"].string_param = "ignored"
    request.parameters["flag"].bool_param = True
    request.inputs[0].parameters["shared_memory_region"].string_param = "none"
    output = request.outputs.add(name="label")
    output.parameters["shared_memory_region"].string_param = "none"
    response = stub.ModelInfer(request, timeout=CALL_TIMEOUT)
    assert [v.decode() for v in response.outputs[0].contents.bytes_contents] == ["setosa"]


def test_metadata_as_protobuf_has_no_surprises(
    client: triton.InferenceServerClient, input_name: str
) -> None:
    metadata = MessageToDict(client.get_model_metadata(MODEL))
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnx_onnxv1"
    assert metadata["inputs"][0]["name"] == input_name


def test_unknown_model_is_not_ready(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.is_model_ready("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
