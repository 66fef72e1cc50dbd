"""tritonclient.http（KServe/Triton の V2 クライアント）で実サーバーを呼ぶ：JSON とバイナリ。"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from support.samples import MODEL, SPECIES
from support.servers import LiveServer

ROWS = np.array([row for row, _ in SPECIES], dtype=np.float32)
LABELS = [label for _, label in SPECIES]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    """V2 クライアント（127.0.0.1 のみ）。"""
    url = live_server.base_url.removeprefix("http://")
    with triton.InferenceServerClient(url=url, network_timeout=10.0) as v2:
        yield v2


@pytest.fixture(scope="module")
def seed_probabilities(live_server: LiveServer) -> np.ndarray:
    """同じ 3 行をシードの /predict に送った確率。"""
    response = httpx.post(
        f"{live_server.base_url}/predict", json={"data": ROWS.tolist()}, timeout=10.0
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["prediction"], dtype=np.float32)


@pytest.fixture(scope="module")
def input_name(client: triton.InferenceServerClient) -> str:
    """メタデータが示す入力名。"""
    metadata = client.get_model_metadata(MODEL)
    name: str = metadata["inputs"][0]["name"]
    return name


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("no_such_model")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "model-in-image"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(MODEL, model_version="1")
    assert metadata["name"] == MODEL
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnx_onnxv1"
    (tensor,) = metadata["inputs"]
    assert (tensor["datatype"], tensor["shape"]) == ("FP32", [-1, 4])
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert outputs == {
        "probabilities": ("FP32", [-1, 3]),
        "label": ("BYTES", [-1]),
        # グラフの出力そのもの（名前が導いた出力と重なるので graph: を付ける）
        "graph:label": ("INT64", [-1]),
        "graph:probabilities": ("FP32", [-1, 3]),
    }


def test_graph_outputs_by_name(client: triton.InferenceServerClient, input_name: str) -> None:
    """グラフの出力（分類器のクラスのコード）も名前で求められる。"""
    tensor = triton.InferInput(input_name, list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    outputs = [triton.InferRequestedOutput("graph:label"), triton.InferRequestedOutput("label")]
    result = client.infer(MODEL, [tensor], outputs=outputs)
    assert result.as_numpy("graph:label").tolist() == [0, 1, 2]
    assert [v.decode() for v in result.as_numpy("label")] == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize("binary_input", [True, False], ids=["bin-in", "json-in"])
@pytest.mark.parametrize("binary_output", [True, False], ids=["bin-out", "json-out"])
def test_infer_three_species(
    client: triton.InferenceServerClient,
    input_name: str,
    seed_probabilities: np.ndarray,
    binary_input: bool,
    binary_output: bool,
) -> None:
    tensor = triton.InferInput(input_name, list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary_input)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary_output),
        triton.InferRequestedOutput("label", binary_data=binary_output),
    ]
    result = client.infer(MODEL, [tensor], outputs=outputs, request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == MODEL
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (3, 3)
    np.testing.assert_array_equal(probabilities, seed_probabilities)
    labels = result.as_numpy("label")
    assert labels is not None
    assert [_text(v) for v in labels.tolist()] == LABELS


def test_infer_default_outputs_are_binary(
    client: triton.InferenceServerClient, input_name: str, seed_probabilities: np.ndarray
) -> None:
    """outputs を省くと tritonclient は binary_data_output を要求する（既定の使い方）。"""
    tensor = triton.InferInput(input_name, list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer(MODEL, [tensor], model_version="1")
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert set(outputs) == {"probabilities", "label"}
    assert all("binary_data_size" in o["parameters"] for o in outputs.values())
    np.testing.assert_array_equal(result.as_numpy("probabilities"), seed_probabilities)
    labels = result.as_numpy("label")
    assert labels is not None
    assert [_text(v) for v in labels.tolist()] == LABELS


def test_infer_selected_output_only(client: triton.InferenceServerClient, input_name: str) -> None:
    tensor = triton.InferInput(input_name, [1, 4], "FP32")
    tensor.set_data_from_numpy(ROWS[:1])
    result = client.infer(MODEL, [tensor], outputs=[triton.InferRequestedOutput("label")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None


@pytest.mark.parametrize(
    ("model", "version", "status"),
    [("no_such_model", "", "404"), (MODEL, "7", "404")],
    ids=["unknown-model", "unknown-version"],
)
def test_infer_unknown_model(
    client: triton.InferenceServerClient, input_name: str, model: str, version: str, status: str
) -> None:
    tensor = triton.InferInput(input_name, [1, 4], "FP32")
    tensor.set_data_from_numpy(ROWS[:1])
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, [tensor], model_version=version)
    assert info.value.status() == status
    assert model in info.value.message()


def test_infer_bad_shape_is_400(client: triton.InferenceServerClient, input_name: str) -> None:
    data = np.zeros((1, 3), dtype=np.float32)
    tensor = triton.InferInput(input_name, [1, 3], "FP32")
    tensor.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [tensor])
    assert info.value.status() == "400"
    assert "shape" in info.value.message()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
