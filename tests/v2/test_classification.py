"""V2 REST の分類拡張（Triton の classification）：JSON とバイナリ、種類ごとの誤り（TestClient）。

期待値は同じサーバーの数値の出力（または onnxruntime）から tests/support/v2_classification が作る。
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from model_in_image.codecs.v2_classification import Classification
from support.samples import IRIS_LABELS, SPECIES
from support.samples import V2_INFER as INFER
from support.v2 import HEADER
from support.v2_classification import (
    UNCLASSIFIABLE,
    app_client,
    expected_top_k,
    zoo_client,
    zoo_clients,
)
from support.zoo import load_case, softmax, v2_request

ROWS = [row for row, _ in SPECIES]
IRIS = [IRIS_LABELS[str(i)] for i in range(3)]
NET_LABELS = {"0": "alpha", "1": "beta", "2": "gamma"}


@pytest.fixture(scope="module")
def iris() -> Iterator[TestClient]:
    """同梱の Iris（分類器、ラベルファイルあり）。"""
    with app_client() as client:
        yield client


@pytest.fixture(scope="module")
def zoo() -> Iterator[Callable[[str], TestClient]]:
    """動物園のモデルのアプリ（名前で、一度だけ起動）。"""
    with zoo_clients() as client_for:
        yield client_for


@pytest.fixture(scope="module")
def named_logits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """ラベルファイルと softmax の後処理を付けたロジットのネット。"""
    labels = tmp_path_factory.mktemp("net-labels") / "labels.json"
    labels.write_bytes(orjson.dumps(NET_LABELS))
    with zoo_client(
        "torch_mlp_logits", label_filepath=labels, model_postprocess="softmax"
    ) as client:
        yield client


def iris_body(*outputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS}
    return {"inputs": [tensor], "outputs": list(outputs), **extra}


def classify(name: str, k: Any, **parameters: Any) -> dict[str, Any]:
    return {"name": name, "parameters": {"classification": k, **parameters}}


def infer(client: TestClient, body: dict[str, Any], model: str = "") -> dict[str, Any]:
    path = f"/v2/models/{model}/infer" if model else INFER
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def rows_of(output: dict[str, Any]) -> list[list[str]]:
    """BYTES [N, k] の出力を行ごとのリストにする（形も確かめる）。"""
    assert output["datatype"] == "BYTES"
    rows, k = output["shape"]
    data = output["data"]
    assert len(data) == rows * k
    return [data[i * k : (i + 1) * k] for i in range(rows)]


@pytest.fixture(scope="module")
def iris_probabilities(iris: TestClient) -> np.ndarray:
    """同じ 3 行の probabilities（分類なし）。"""
    output = infer(iris, iris_body({"name": "probabilities"}))["probabilities"]
    return np.asarray(output["data"]).reshape(output["shape"])


def test_server_metadata_lists_the_extension(iris: TestClient) -> None:
    extensions = iris.get("/v2").json()["extensions"]
    assert "classification" in extensions
    assert "binary_tensor_data" in extensions


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_of_probabilities(iris: TestClient, iris_probabilities: np.ndarray, k: int) -> None:
    """上位 k の "score:index:label"（値の大きい順、score は小数 6 桁）。"""
    output = infer(iris, iris_body(classify("probabilities", k)))["probabilities"]
    assert output["shape"] == [3, k]
    assert rows_of(output) == expected_top_k(iris_probabilities, k, IRIS)


def test_k_above_the_class_count_is_cut(iris: TestClient, iris_probabilities: np.ndarray) -> None:
    output = infer(iris, iris_body(classify("probabilities", 1000)))["probabilities"]
    assert output["shape"] == [3, 3]
    assert rows_of(output) == expected_top_k(iris_probabilities, 3, IRIS)


def test_top_1_names_the_predicted_class(iris: TestClient) -> None:
    outputs = infer(iris, iris_body(classify("probabilities", 1), {"name": "label"}))
    top = [row[0].rsplit(":", 1)[1] for row in rows_of(outputs["probabilities"])]
    assert top == outputs["label"]["data"] == [label for _, label in SPECIES]


def test_graph_output_and_other_outputs_in_one_request(
    iris: TestClient, iris_probabilities: np.ndarray
) -> None:
    """グラフの確率の出力も分類できる。分類しない出力はそのまま（同じリクエストの中で）。"""
    body = iris_body(classify("graph:probabilities", 2), {"name": "probabilities"})
    outputs = infer(iris, body)
    graph = outputs["graph:probabilities"]
    assert rows_of(graph) == expected_top_k(iris_probabilities, 2, IRIS)
    assert outputs["probabilities"]["datatype"] == "FP32"
    np.testing.assert_allclose(outputs["probabilities"]["data"], iris_probabilities.ravel())


def _deserialize(raw: bytes) -> list[str]:
    items, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        items.append(raw[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    return items


@pytest.mark.parametrize("binary_input", [False, True])
def test_binary_output(
    iris: TestClient, iris_probabilities: np.ndarray, binary_input: bool
) -> None:
    """binary_data の分類の出力は BYTES のバイナリ形式（入力もバイナリで送れる）。"""
    body = iris_body(classify("probabilities", 2, binary_data=True), {"name": "label"})
    headers: dict[str, str] = {}
    if binary_input:
        raw = np.asarray(ROWS, dtype="<f4").tobytes()
        del body["inputs"][0]["data"]
        body["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
        header = orjson.dumps(body)
        content = header + raw
        headers = {HEADER: str(len(header)), "content-type": "application/octet-stream"}
    else:
        content = orjson.dumps(body)
    response = iris.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER])
    head = orjson.loads(response.content[:length])
    probabilities, label = head["outputs"]
    assert (probabilities["datatype"], probabilities["shape"]) == ("BYTES", [3, 2])
    size = probabilities["parameters"]["binary_data_size"]
    assert len(response.content) == length + size
    items = _deserialize(response.content[length:])
    assert [items[0:2], items[2:4], items[4:6]] == expected_top_k(iris_probabilities, 2, IRIS)
    assert label["data"] == [name for _, name in SPECIES]


def test_logits_without_class_names_give_score_and_index(
    zoo: Callable[[str], TestClient],
) -> None:
    """クラス名の無いネット：score:index だけ（score はロジットそのもの）。"""
    case = load_case("torch_mlp_logits")
    body = {**v2_request(case, case.rows), "outputs": [classify("logits", 2)]}
    output = infer(zoo(case.name), body, case.name)["logits"]
    assert rows_of(output) == expected_top_k(case.run("logits"), 2, None)


def test_named_net_with_softmax(named_logits: TestClient) -> None:
    """ラベルファイルのあるネット：label 付き。後処理の probabilities も分類できる。"""
    case = load_case("torch_mlp_logits")
    names = [NET_LABELS[str(i)] for i in range(3)]
    outputs = [classify("probabilities", 3), classify("logits", 1)]
    got = infer(named_logits, {**v2_request(case, case.rows), "outputs": outputs}, case.name)
    raw = case.run("logits")
    probabilities = rows_of(got["probabilities"])
    assert [[item.rsplit(":", 2)[1:] for item in row] for row in probabilities] == [
        [item.rsplit(":", 2)[1:] for item in row] for row in expected_top_k(raw, 3, names)
    ]
    scores = [[float(item.split(":")[0]) for item in row] for row in probabilities]
    want = np.sort(softmax(raw.astype(np.float64)), axis=1)[:, ::-1]
    np.testing.assert_allclose(scores, want, atol=1e-6)
    assert rows_of(got["logits"]) == expected_top_k(raw, 1, names)


def assert_error(response: Any, fragment: str) -> None:
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"], response.json()


@pytest.mark.parametrize("k", [0, -1, 1.5, 2.0, True, False, "2", None, [2], {"k": 2}])
def test_k_that_is_not_a_positive_integer_is_400(iris: TestClient, k: Any) -> None:
    response = iris.post(INFER, json=iris_body(classify("probabilities", k)))
    assert_error(response, "output 'probabilities': parameters.classification must be a positive")


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ("label", "output 'label' is a BYTES tensor"),
        ("graph:label", "output 'graph:label' has one value per row"),
    ],
)
def test_iris_outputs_that_cannot_be_classified_are_400(
    iris: TestClient, output: str, fragment: str
) -> None:
    """誤りの文は分類できる出力を挙げる。"""
    response = iris.post(INFER, json=iris_body(classify(output, 2)))
    assert_error(response, fragment)
    assert (
        "outputs of this classifier model are 'probabilities', 'graph:probabilities'"
        in (response.json()["error"])
    )


def test_unknown_output_with_classification_is_400(iris: TestClient) -> None:
    response = iris.post(INFER, json=iris_body(classify("no_such_output", 2)))
    assert_error(response, "unknown output: 'no_such_output'")


def test_binary_request_errors_are_400(iris: TestClient) -> None:
    body = iris_body(
        classify("label", 2, binary_data=True), parameters={"binary_data_output": True}
    )
    response = iris.post(INFER, content=orjson.dumps(body))
    assert_error(response, "BYTES tensor")


@pytest.mark.parametrize(("name", "output", "fragment"), UNCLASSIFIABLE)
def test_models_without_class_scores_are_400(
    zoo: Callable[[str], TestClient], name: str, output: str, fragment: str
) -> None:
    """回帰・テンソルのモデルの出力は分類できない（どの出力も得点ではないと言う）。"""
    case = load_case(name)
    body = {**v2_request(case, case.rows), "outputs": [classify(output, 1)]}
    response = zoo(name).post(f"/v2/models/{name}/infer", json=body)
    assert_error(response, f"output {output!r} {fragment}")
    assert f"this {case.kind} model has no class-score output" in response.json()["error"]


def test_single_logit_with_sigmoid() -> None:
    """[N, 1] の出力に sigmoid：導いた 2 列の probabilities は分類でき、グラフの出力は 400。"""
    case = load_case("sklearn_linear_regression")
    body = {**v2_request(case, case.rows), "outputs": [classify("probabilities", 2)]}
    with zoo_client(case.name, model_postprocess="sigmoid") as client:
        output = infer(client, body, case.name)["probabilities"]
        body["outputs"] = [classify("variable", 2)]
        refused = client.post(f"/v2/models/{case.name}/infer", json=body)
    positive = 1.0 / (1.0 + np.exp(-case.run("variable").astype(np.float32)))  # サーバーと同じ型
    assert rows_of(output) == expected_top_k(np.hstack([1.0 - positive, positive]), 2, None)
    assert_error(refused, "output 'variable' has one value per row")
    assert "class-score outputs of this logits model are 'probabilities'" in refused.text


def test_ties_keep_column_order_and_scores_print_like_std_to_string() -> None:
    """同じ値の列は番号の小さい順。score は std::to_string(float) と同じ %f（負の値・丸めも）。"""
    names = [f"c{i}" for i in range(24)]
    ties = np.zeros((2, 24), dtype=np.float32)
    ties[0, [3, 7, 19]] = 0.25
    ties[1] = np.linspace(-1.0, 1.0, 24, dtype=np.float32)[::-1].round(1)
    classification = Classification([("p", "FP32", [-1, 24])], {"p"}, names, "classifier")
    shape, items = classification.top_k("p", ties, 10)
    assert shape == [2, 10]
    assert [items[:10], items[10:]] == expected_top_k(ties, 10, names)
    assert items[:4] == ["0.250000:3:c3", "0.250000:7:c7", "0.250000:19:c19", "0.000000:0:c0"]
    logits = np.array([[13.674420356750488, 3.7826390266418457, -22.641918182373047]], "f4")
    _, printed = Classification([("l", "FP32", [-1, 3])], {"l"}, None, "logits").top_k(
        "l", logits, 3
    )
    assert printed == ["13.674420:0", "3.782639:1", "-22.641918:2"]
