"""モデル動物園：実際のフレームワークが書き出したモデルを、それぞれアプリで提供して確かめる。

期待値はフレームワーク自身の予測（tests/zoo/models/*.json）。サーバーの値は、それと
ケースの許容誤差で、同じグラフを onnxruntime で直に動かした値とはほぼ完全に一致する。
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from support.zoo import (
    ORT_ATOL,
    ORT_RTOL,
    Serve,
    ZooCase,
    case_names,
    cases,
    load_case,
    v2_outputs,
    v2_request,
    v2_tensors,
)

IRIS_NAMES = {"setosa", "versicolor", "virginica"}
# /predict の値が確率の種類（V2 では probabilities という名前になる）
PROBABILITY_KINDS = ("classifier", "probabilities")


def close_to_framework(got: Any, case: ZooCase, expected: Any) -> None:
    """フレームワークの値とケースの許容誤差で一致する。"""
    rtol, atol = case.tolerance
    want = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(got).reshape(want.shape), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", case_names())
def test_metadata_states_kind_inputs_and_outputs(serve: Serve, name: str) -> None:
    """/metadata は種類・入出力（名前・型・形）・クラス名・固定のバッチを述べる。"""
    case = load_case(name)
    metadata = serve(name).get("/metadata").json()
    assert metadata["kind"] == case.kind
    inputs = [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]]
    assert inputs == [(i["name"], i["datatype"], i["shape"]) for i in case.inputs]
    assert [o["name"] for o in metadata["outputs"]] == [o["name"] for o in case.outputs]
    for served, graph in zip(metadata["outputs"], case.outputs, strict=True):
        if graph["datatype"] is not None:
            assert (served["datatype"], served["shape"]) == (graph["datatype"], graph["shape"])
    assert metadata["labels"] == (case.classes or [])
    assert metadata["fixed_batch_size"] == case.fixed_batch


@pytest.mark.parametrize("name", case_names())
def test_predict_matches_the_framework(serve: Serve, name: str) -> None:
    """/predict はフレームワーク自身の予測と一致し、onnxruntime を直に動かした値と同じ。"""
    case = load_case(name)
    response = serve(name).post("/predict", json={"data": case.rows})
    assert response.status_code == 200, response.text
    got = np.asarray(response.json()["prediction"])
    close_to_framework(got, case, case.prediction.values)
    head = load_case(name).data["outputs"]
    direct = case.run(_head(case, [o["name"] for o in head]))
    np.testing.assert_allclose(
        got, direct.reshape(got.shape), rtol=ORT_RTOL, atol=ORT_ATOL, err_msg=name
    )


def _head(case: ZooCase, names: list[str]) -> str:
    """/predict にあたるグラフの出力（分類器は確率、ほかは最初の出力）。"""
    if case.kind == "classifier":
        return next(n for n in names if "prob" in n)
    return names[0]


@pytest.mark.parametrize("name", case_names())
def test_predict_label_matches_the_framework(serve: Serve, name: str) -> None:
    """/predict/label はフレームワークのクラス名と完全に一致し、クラスの無いモデルは 4xx。"""
    case = load_case(name)
    response = serve(name).post("/predict/label", json={"data": case.rows})
    if case.labels is None:
        assert response.status_code == 400, response.text
        assert f"this model is a {case.kind}" in response.json()["detail"]
        assert serve(name).get("/label").status_code == 404
        return
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == case.labels.values


@pytest.mark.parametrize("name", case_names())
def test_v2_infer_matches_the_framework(serve: Serve, name: str) -> None:
    """V2 REST の推論は、グラフの入力名・型で送ると同じ値とクラス名を返す。"""
    case = load_case(name)
    outputs = v2_outputs(serve(name), case)
    primary = "probabilities" if case.kind in PROBABILITY_KINDS else _head(case, list(outputs))
    close_to_framework(outputs[primary], case, case.prediction.values)
    if case.labels is not None:
        assert outputs["label"].tolist() == case.labels.values
    for output, expected in case.extra_outputs.items():
        close_to_framework(outputs[output], case, expected.values)


@pytest.mark.parametrize("name", cases("classifier", "probabilities", "logits"))
def test_foreign_models_never_answer_with_iris_names(serve: Serve, name: str) -> None:
    """--labels なしで起動した持ち込みのモデルは、既定の Iris のラベルを借りない。"""
    case = load_case(name)
    client = serve(name)
    labels = set(client.get("/label").json().values())
    predicted = client.post("/predict/label", json={"data": case.rows}).json()["prediction"]
    assert not labels & IRIS_NAMES
    assert not set(predicted) & IRIS_NAMES
    assert labels == set(case.classes or ())


def _replace(row: list[Any], value: Any) -> list[Any]:
    return [value, *row[1:]]


def _bad_rows(case: ZooCase) -> list[tuple[str, list[Any], str]]:
    """(理由, 行, 誤りが名指しすべき入力) の並び。"""
    first = case.rows[0]
    if len(case.inputs) > 1:
        names = [spec["name"] for spec in case.inputs]
        bad = [
            ("missing key", [{k: v for k, v in first.items() if k != names[0]}], names[0]),
            ("unknown key", [{**first, "bogus": 1}], "bogus"),
        ]
        for spec in case.inputs:
            wrong = 3 if spec["element"] == "string" else "abc"
            rows = [{**first, spec["name"]: wrong}]
            bad.append((f"{wrong!r} into {spec['name']}", rows, spec["name"]))
        return bad
    spec = case.inputs[0]
    if spec["element"] == "string":
        return [("a number into a string input", [_replace(first, 3)], spec["name"])]
    return [
        ("a string into an int64 input", [_replace(first, "abc")], spec["name"]),
        ("a float into an int64 input", [_replace(first, 1.5)], spec["name"]),
        ("an int64 overflow", [_replace(first, 2**63)], spec["name"]),
    ]


_TYPED = [
    (name, reason, rows, input_name)
    for name in case_names()
    if load_case(name).inputs[0]["element"] != "float" or len(load_case(name).inputs) > 1
    for reason, rows, input_name in _bad_rows(load_case(name))
]


@pytest.mark.parametrize(("name", "reason", "rows", "input_name"), _TYPED)
def test_bad_input_is_refused_naming_the_input(
    serve: Serve, name: str, reason: str, rows: list[Any], input_name: str
) -> None:
    """欠けたキー・未知のキー・型の違う値は、入力の名前を挙げて断る（シード 422・V2 400）。"""
    client = serve(name)
    seed = client.post("/predict", json={"data": rows})
    assert seed.status_code == 422, (reason, seed.text)
    assert repr(input_name) in seed.text, (reason, seed.text)
    if "key" in reason:
        return  # V2 はキーではなくテンソルで送る
    v2 = client.post(f"/v2/models/{name}/infer", json=v2_request(load_case(name), rows))
    assert v2.status_code == 400, (reason, v2.text)
    assert repr(input_name) in v2.json()["error"], (reason, v2.text)


_FLOAT_ONLY = [
    name
    for name in cases("classifier", "probabilities", "logits", "regressor")
    if [i["element"] for i in load_case(name).inputs] == ["float"]
]


@pytest.mark.parametrize("name", _FLOAT_ONLY)
def test_a_string_into_a_float_input_is_refused(serve: Serve, name: str) -> None:
    """実数の入力に文字列を送ると 422（500 にはならない）。"""
    case = load_case(name)
    response = serve(name).post("/predict", json={"data": [_replace(case.rows[0], "abc")]})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("name", case_names())
def test_one_row_answers_in_the_seed_flat_form(serve: Serve, name: str) -> None:
    """1 行の /predict と /predict/label はシードと同じ平らな形（行のリストではない）。"""
    case = load_case(name)
    client = serve(name)
    got = client.post("/predict", json={"data": case.rows[:1]}).json()["prediction"]
    close_to_framework(got, case, case.prediction.values[:1])
    if case.labels is not None:
        label = client.post("/predict/label", json={"data": case.rows[:1]}).json()["prediction"]
        assert label == case.labels.values[0]


@pytest.mark.parametrize("name", case_names())
def test_metrics_after_predictions(serve: Serve, name: str) -> None:
    """予測の後の /metrics はどの種類でも 200（予測の監視が種類に合わない値で壊れない）。"""
    client = serve(name)
    assert client.post("/predict", json={"data": load_case(name).rows}).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200, response.text[:500]


@pytest.mark.parametrize("token", [40, 1000, -41])
def test_a_token_outside_the_vocabulary_is_a_client_error(serve: Serve, token: int) -> None:
    """埋め込みの範囲外のトークン ID は、ONNX Runtime の理由を添えた 400（500 ではない）。"""
    case = load_case("torch_embedding")
    rows = [_replace(case.rows[0], token)]
    client = serve(case.name)
    seed = client.post("/predict", json={"data": rows})
    assert seed.status_code == 400, seed.text
    assert "out of data bounds" in seed.json()["detail"]
    v2 = client.post(f"/v2/models/{case.name}/infer", json=v2_request(case, rows))
    assert v2.status_code == 400, v2.text


def _raw(datatype: str, data: list[Any]) -> bytes:
    """V2 のバイナリテンソルの形式（BYTES は要素ごとに 4 バイト LE の長さ + 本体）。"""
    if datatype == "BYTES":
        return b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in data)
    dtype = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}[datatype]
    return np.asarray(data, dtype=dtype).tobytes()


@pytest.mark.parametrize("name", case_names())
def test_v2_binary_extension_matches_the_framework(serve: Serve, name: str) -> None:
    """バイナリテンソル拡張（binary_data_size）で送っても同じ値（BYTES・INT64 の入力も）。"""
    case = load_case(name)
    inputs, chunks = [], []
    for input_name, datatype, shape, data in v2_tensors(case, case.rows):
        raw = _raw(datatype, data)
        parameters = {"binary_data_size": len(raw)}
        inputs.append(
            {"name": input_name, "datatype": datatype, "shape": shape, "parameters": parameters}
        )
        chunks.append(raw)
    header = json.dumps({"inputs": inputs}).encode()
    response = serve(name).post(
        f"/v2/models/{name}/infer",
        content=header + b"".join(chunks),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    outputs = {out["name"]: out for out in response.json()["outputs"]}
    primary = "probabilities" if case.kind in PROBABILITY_KINDS else next(iter(outputs))
    close_to_framework(outputs[primary]["data"], case, case.prediction.values)
    if case.labels is not None:
        assert outputs["label"]["data"] == case.labels.values


@pytest.mark.parametrize("name", cases("classifier"))
def test_v2_graph_outputs_are_reachable_by_name(serve: Serve, name: str) -> None:
    """分類器でもグラフの出力を名指しで返す（probabilities・label と重なる名前は graph: 付き）。"""
    case = load_case(name)
    client = serve(name)
    listed = [o["name"] for o in client.get(f"/v2/models/{name}").json()["outputs"]]
    derived = ("probabilities", "label")
    graph = [f"graph:{o['name']}" if o["name"] in derived else o["name"] for o in case.outputs]
    assert listed == [*derived, *graph]
    if not graph:
        return
    body = v2_request(case, case.rows) | {"outputs": [{"name": n} for n in [*graph, "label"]]}
    response = client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {out["name"]: out["data"] for out in response.json()["outputs"]}
    assert case.labels is not None
    assert outputs["label"] == case.labels.values
    label_output = next(n for n in graph if "label" in n)
    assert [str(v) for v in outputs[label_output]] == case.labels.values


@pytest.mark.parametrize("name", ["sklearn_logreg_zipmap", "sklearn_gbr", "torch_mlp_logits"])
def test_v2_unknown_output_lists_the_available_ones(serve: Serve, name: str) -> None:
    """知らない出力の名前は 400 で、返せる名前を挙げる。"""
    case = load_case(name)
    body = v2_request(case, case.rows) | {"outputs": [{"name": "bogus"}]}
    response = serve(name).post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 400, response.text
    listed = [o["name"] for o in serve(name).get(f"/v2/models/{name}").json()["outputs"]]
    assert all(n in response.json()["error"] for n in listed)
