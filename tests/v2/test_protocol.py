"""V2 の正常系（TestClient）：メタデータ・readiness・JSON とバイナリの推論・OpenAPI。"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.dataplane import DataPlane
from support.samples import MODEL, SETOSA, SPECIES
from support.samples import V2_INFER as INFER
from support.v2 import HEADER, infer_body


def binary_request(rows: np.ndarray, **extra: Any) -> tuple[bytes, dict[str, str]]:
    """バイナリテンソル拡張のリクエスト（JSON 部 + 生のバイト列）。"""
    raw = rows.astype("<f4").tobytes()
    tensor = {
        "name": "input",
        "shape": list(rows.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(raw)},
    }
    header = orjson.dumps({"inputs": [tensor], **extra})
    return header + raw, {HEADER: str(len(header)), "content-type": "application/octet-stream"}


def split_response(content: bytes, header_length: int) -> tuple[dict[str, Any], bytes]:
    """バイナリ応答を JSON 部とバイナリ部に分ける。"""
    return orjson.loads(content[:header_length]), content[header_length:]


def outputs_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """出力を名前で引けるようにする。"""
    return {o["name"]: o for o in body["outputs"]}


GET_PATHS = [
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    *(
        f"/v2/models/{MODEL}{suffix}"
        for suffix in ("", "/ready", "/versions/1", "/versions/1/ready")
    ),
]


@pytest.mark.parametrize("path", GET_PATHS)
def test_get_endpoints_answer_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"


def test_model_metadata_derived_from_model(client: TestClient, dataplane: DataPlane) -> None:
    body = client.get(f"/v2/models/{MODEL}").json()
    sig = dataplane.model.signature
    assert body["inputs"] == [{"name": sig.inputs[0].name, "datatype": "FP32", "shape": [-1, 4]}]
    assert body["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}


def test_model_name_from_env(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(model_name="flowers"))) as custom:
        assert custom.get("/v2/models/flowers").json()["name"] == "flowers"
        assert custom.get(f"/v2/models/{MODEL}").status_code == 404
        response = custom.post("/v2/models/flowers/infer", json=infer_body(SETOSA))
        assert response.status_code == 200, response.text
        assert response.json()["model_name"] == "flowers"


@pytest.mark.parametrize(("row", "label"), SPECIES)
def test_infer_json_matches_seed_predict(client: TestClient, row: list[float], label: str) -> None:
    response = client.post(INFER, json=infer_body(row))
    assert response.status_code == 200, response.text
    outputs = outputs_of(response.json())
    seed = client.post("/predict", json={"data": [row]}).json()["prediction"]
    assert outputs["probabilities"]["data"] == seed  # 同じ数値（float32 の値を float64 で表記）
    assert outputs["probabilities"]["shape"] == [1, 3]
    assert outputs["label"] == {"name": "label", "datatype": "BYTES", "shape": [1], "data": [label]}


def test_infer_nested_equals_flat(client: TestClient) -> None:
    rows = [row for row, _ in SPECIES]
    flat = [v for row in rows for v in row]
    nested = client.post(INFER, json=infer_body(rows, [3, 4])).json()
    plain = client.post(INFER, json=infer_body(flat, [3, 4])).json()
    assert nested == plain
    assert outputs_of(plain)["label"]["data"] == [label for _, label in SPECIES]


def test_infer_fp64_and_versioned_path(client: TestClient) -> None:
    body = infer_body(SETOSA, id="abc")
    body["inputs"][0]["datatype"] = "FP64"
    response = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "abc"
    assert response.json()["model_version"] == "1"


def test_infer_without_id_has_no_id(client: TestClient) -> None:
    assert "id" not in client.post(INFER, json=infer_body(SETOSA)).json()


def test_infer_selected_outputs_in_requested_order(client: TestClient) -> None:
    body = infer_body(SETOSA, outputs=[{"name": "label"}, {"name": "probabilities"}])
    names = [o["name"] for o in client.post(INFER, json=body).json()["outputs"]]
    assert names == ["label", "probabilities"]


def test_binary_input_and_output(client: TestClient) -> None:
    rows = np.array([row for row, _ in SPECIES], dtype=np.float32)
    content, headers = binary_request(rows, parameters={"binary_data_output": True})
    response = client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header, raw = split_response(response.content, int(response.headers[HEADER]))
    outputs = outputs_of(header)
    proba_size = outputs["probabilities"]["parameters"]["binary_data_size"]
    probabilities = np.frombuffer(raw[:proba_size], dtype="<f4").reshape(3, 3)
    seed = client.post("/predict", json={"data": rows.tolist()}).json()["prediction"]
    np.testing.assert_array_equal(probabilities, np.asarray(seed, dtype=np.float32))
    assert _deserialize_bytes(raw[proba_size:]) == [label for _, label in SPECIES]


def test_binary_output_for_one_tensor_only(client: TestClient) -> None:
    outputs = [{"name": "probabilities"}, {"name": "label", "parameters": {"binary_data": True}}]
    response = client.post(INFER, json=infer_body(SETOSA, outputs=outputs))
    header, raw = split_response(response.content, int(response.headers[HEADER]))
    by_name = outputs_of(header)
    assert "data" in by_name["probabilities"]
    assert by_name["label"]["parameters"] == {"binary_data_size": len(raw)}
    assert _deserialize_bytes(raw) == ["setosa"]


def test_binary_output_can_be_declined_per_tensor(client: TestClient) -> None:
    outputs = [{"name": "label", "parameters": {"binary_data": False}}]
    body = infer_body(SETOSA, outputs=outputs, parameters={"binary_data_output": True})
    response = client.post(INFER, json=body)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["outputs"][0]["data"] == ["setosa"]


def test_binary_fp64_input(client: TestClient) -> None:
    raw = np.array([SETOSA], dtype="<f8").tobytes()
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = orjson.dumps({"inputs": [tensor]})
    response = client.post(INFER, content=header + raw, headers={HEADER: str(len(header))})
    assert response.status_code == 200, response.text
    assert outputs_of(response.json())["label"]["data"] == ["setosa"]


def test_serves_while_draining_but_not_ready(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, ModelServerApp)
    app.state.draining = True
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 503
    assert client.get("/v2/health/live").status_code == 200
    assert client.post(INFER, json=infer_body(SETOSA)).status_code == 200


def test_metrics_label_v2_infer_by_route_template(client: TestClient) -> None:
    client.post(INFER, json=infer_body(SETOSA))
    text = client.get("/metrics").text
    assert 'route="/v2/models/{model_name}/infer",status="200"' in text


def test_openapi_documents_v2(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    ):
        assert path in paths, path
    infer = paths["/v2/models/{model_name}/infer"]["post"]
    content = infer["requestBody"]["content"]
    assert set(content) == {"application/json", "application/octet-stream"}
    assert "$defs" not in orjson.dumps(content).decode()
    assert {"400", "404", "413", "415", "503"} <= set(infer["responses"])
    example = content["application/json"]["example"]
    assert client.post(INFER, json=example).status_code == 200


def _deserialize_bytes(raw: bytes) -> list[str]:
    """BYTES テンソル（4 バイト LE の長さ + 本体の並び）を読む。"""
    values: list[str] = []
    offset = 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        values.append(raw[offset : offset + length].decode())
        offset += length
    return values
