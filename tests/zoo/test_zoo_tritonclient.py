"""動物園のどのモデルも、本物の tritonclient（HTTP と gRPC）で実サーバーから使える。

ケースごとにサーバーを 1 つ（127.0.0.1 の空きポート、HTTP と gRPC）起動し、そのモデルの
テストをまとめて流す。出力は同じグラフを onnxruntime で直に動かした値と 1e-5 以内、分類拡張の
上位 k は onnxruntime の値の numpy の argsort と一致すること。分類できない出力は 400 /
INVALID_ARGUMENT。
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from support.servers import LiveServer, running_server
from support.v2_classification import as_strings, assert_top_k
from support.zoo import ZooCase, case_names, load_case, v2_tensors

TIMEOUT = 10.0
TOLERANCE = 1e-5
DERIVED = ("probabilities", "label")
# 要求の仕方：HTTP のバイナリ拡張、HTTP の JSON、gRPC（raw_input_contents）
WAYS = ("http-binary", "http-json", "grpc")


@dataclass
class Served:
    """1 ケースの実サーバーと 2 つのクライアント。"""

    case: ZooCase
    server: LiveServer
    http: triton_http.InferenceServerClient
    grpc: triton_grpc.InferenceServerClient
    # メタデータの出力名 → (V2 の型, 形)
    outputs: dict[str, tuple[str, list[int]]]

    def graph_name(self, public: str) -> str | None:
        """公開名のグラフの出力名（導いた probabilities・label なら None）。"""
        if public.startswith("graph:"):
            return public.removeprefix("graph:")
        graph = [o["name"] for o in self.case.outputs]
        if public in DERIVED and (f"graph:{public}" in self.outputs or public not in graph):
            return None
        return public

    @property
    def primary(self) -> str | None:
        """クラスの得点を出すグラフの出力（ZipMap か実数の [N, C]。回帰・テンソルは None）。"""
        if self.case.kind in ("regressor", "tensor"):
            return None
        return next(
            o["name"]
            for o in self.case.outputs
            if o["datatype"] is None or (o["datatype"] == "FP32" and len(o["shape"]) == 2)
        )

    def public(self, graph: str) -> str:
        return f"graph:{graph}" if f"graph:{graph}" in self.outputs else graph

    @property
    def score_outputs(self) -> list[str]:
        """分類拡張の効く出力（導いた probabilities と、クラスの得点のグラフの出力）。"""
        if self.primary is None:
            return []
        derived = ["probabilities"] if self.case.kind in ("classifier", "probabilities") else []
        return [*derived, self.public(self.primary)]

    @property
    def labels(self) -> list[str] | None:
        """分類の label（分類器のクラス名。列の番号しか無いネットは None）。"""
        return self.case.classes if self.case.kind == "classifier" else None

    def expected(self, public: str) -> Any:
        """出力の期待値：onnxruntime でグラフを直に動かした値（導いた出力はそこから）。"""
        graph = self.graph_name(public)
        if graph is not None:
            return self.case.run(graph)
        assert self.primary is not None
        scores = self.case.run(self.primary)
        if public == "probabilities":
            return scores
        if self.case.kind == "classifier":  # 分類器のクラスはグラフ自身のラベルの出力
            label = next(o["name"] for o in self.case.outputs if o["name"] != self.primary)
            return np.array([str(code) for code in self.case.run(label).ravel().tolist()])
        return np.array([str(i) for i in scores.argmax(axis=1)])


@pytest.fixture(scope="module", params=case_names())
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """ケースのモデルで起動した実サーバー（ケースごとに 1 つ）。"""
    case = load_case(request.param)
    env = {
        "MODEL_FILEPATH": str(case.model),
        "LABEL_FILEPATH": "",
        "SAMPLE_DATA": json.dumps(case.rows[:1]),
    }
    with (
        running_server(tmp_path_factory.mktemp(case.name), env, grpc=True) as server,
        triton_http.InferenceServerClient(
            server.base_url.removeprefix("http://"), network_timeout=TIMEOUT
        ) as http,
        triton_grpc.InferenceServerClient(server.grpc_target) as grpc,
    ):
        metadata = http.get_model_metadata(case.name)
        outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
        yield Served(case, server, http, grpc, outputs)


def infer(served: Served, way: str, outputs: list[tuple[str, int]]) -> dict[str, Any]:
    """tritonclient で推論する（outputs は (名前, class_count)）。名前 → 配列。"""
    case = served.case
    module: Any = triton_grpc if way == "grpc" else triton_http
    binary = way != "http-json"
    inputs = []
    for name, datatype, shape, data in v2_tensors(case, case.rows):
        tensor = module.InferInput(name, shape, datatype)
        array = np.array(data, dtype=triton_to_np_dtype(datatype)).reshape(shape)
        if way == "grpc":
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    if way == "grpc":
        requested = [triton_grpc.InferRequestedOutput(n, class_count=k) for n, k in outputs]
        result = served.grpc.infer(case.name, inputs, outputs=requested, client_timeout=TIMEOUT)
    else:
        requested = [
            triton_http.InferRequestedOutput(n, binary_data=binary, class_count=k)
            for n, k in outputs
        ]
        result = served.http.infer(case.name, inputs, outputs=requested)
    return {name: result.as_numpy(name) for name, _ in outputs}


def test_metadata_over_http_and_grpc(served: Served) -> None:
    """入力はグラフの名前・V2 の型・形（バッチは -1）。出力はグラフのすべての出力を含む。"""
    case = served.case
    http = served.http.get_model_metadata(case.name)
    grpc = served.grpc.get_model_metadata(case.name, as_json=True)
    for metadata in (http, grpc):
        inputs = [
            (i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in metadata["inputs"]
        ]
        assert inputs == [(i["name"], i["datatype"], [-1, *i["shape"][1:]]) for i in case.inputs]
        names = [o["name"] for o in metadata["outputs"]]
        assert names == list(served.outputs)
    graph = {served.graph_name(name) for name in served.outputs} - {None}
    assert graph == {o["name"] for o in case.outputs}
    assert "classification" in served.http.get_server_metadata()["extensions"]


@pytest.mark.parametrize("way", WAYS)
def test_every_output_matches_onnxruntime(served: Served, way: str) -> None:
    """メタデータの出力をすべて求め、onnxruntime の値と 1e-5 以内（文字列・整数は一致）。"""
    got = infer(served, way, [(name, 0) for name in served.outputs])
    for name, values in got.items():
        want = np.asarray(served.expected(name))
        assert list(values.shape) == list(want.shape), name
        if want.dtype.kind in "fc":
            np.testing.assert_allclose(
                values.astype(np.float64), want, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name
            )
        elif want.dtype.kind in "OSU":
            assert np.ravel(as_strings(values.reshape(len(values), -1))).tolist() == [
                str(v) for v in want.ravel().tolist()
            ], name
        else:
            assert values.tolist() == want.tolist(), name


@pytest.mark.parametrize("way", WAYS)
def test_classification_top_k(served: Served, way: str) -> None:
    """クラスの得点の出力の上位 k（k = 1、2、クラス数より多い）は onnxruntime の argsort と合う。"""
    if not served.score_outputs:
        pytest.skip(f"a {served.case.kind} model has no class-score output")
    for k in (1, 2, 100):
        got = infer(served, way, [(name, k) for name in served.score_outputs])
        for name, values in got.items():
            classes = served.expected(name).shape[1]
            assert values.shape == (len(served.case.rows), min(k, classes)), name
            assert_top_k(as_strings(values), served.expected(name), k, served.labels, TOLERANCE)


@pytest.mark.parametrize("way", WAYS)
def test_classification_elsewhere_is_refused(served: Served, way: str) -> None:
    """クラスの得点でない出力に classification を付けると 400 / INVALID_ARGUMENT。"""
    others = [name for name in served.outputs if name not in served.score_outputs]
    for name in others:
        with pytest.raises(InferenceServerException) as caught:
            infer(served, way, [(name, 2)])
        status = "StatusCode.INVALID_ARGUMENT" if way == "grpc" else "400"
        assert caught.value.status() == status, caught.value
        assert f"output {name!r}" in caught.value.message()
        assert "classification needs" in caught.value.message()
