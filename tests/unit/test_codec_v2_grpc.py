"""codecs.v2_grpc：型付きの contents・raw_input_contents ⇄ 配列、出力の選択、応答の組み立て。"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from model_in_image.codecs import v2, v2_grpc
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelServerError
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb
from support.samples import SPECIES

ROWS = np.array([row for row, _ in SPECIES], dtype=np.float64)
LABELS = [label for _, label in SPECIES]
NAMES = ("probabilities", "label")


def features_of(dataplane: DataPlane, request: pb.ModelInferRequest) -> np.ndarray:
    """1 入力のモデルの入力配列（feeds の唯一の値）。"""
    (array,) = v2_grpc.feeds_of(dataplane, request).values()
    return array  # type: ignore[no-any-return]


def typed(rows: np.ndarray, datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris_svc")
    tensor = request.inputs.add(name="X", datatype=datatype, shape=list(rows.shape))
    getattr(tensor.contents, v2_grpc.TYPED_FIELDS[datatype]).extend(rows.ravel().tolist())
    return request


def raw(rows: np.ndarray, datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris_svc")
    request.inputs.add(name="X", datatype=datatype, shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(v2.DATATYPE_TO_NUMPY[datatype]).tobytes())
    return request


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("build", [typed, raw], ids=["typed", "raw"])
def test_features_match_the_rest_rules(
    dataplane: DataPlane, build: Callable[[np.ndarray, str], pb.ModelInferRequest], datatype: str
) -> None:
    features = features_of(dataplane, build(ROWS, datatype))
    (expected,) = dataplane.validate(ROWS.tolist(), loc=("data",)).values()
    np.testing.assert_array_equal(features, expected)
    assert features.dtype == dataplane.model.signature.inputs[0].dtype


def test_large_raw_input_uses_the_array_path(dataplane: DataPlane) -> None:
    rows = np.tile(ROWS, (30, 1))  # 90 行：numpy で範囲を確かめる経路
    features = features_of(dataplane, raw(rows))
    assert features.shape == (90, 4)
    bad = rows.copy()
    bad[70, 2] = np.inf
    with pytest.raises(InvalidInputError) as info:
        features_of(dataplane, raw(bad))
    assert info.value.errors[0]["loc"] == ["raw_input_contents", 0, 70, 2]


def test_raw_fp32_reaches_the_model_without_a_copy(dataplane: DataPlane) -> None:
    """[N, 4] の FP32 の raw は np.frombuffer のまま（コピーなし）。NaN は一般の経路で断る。"""
    features = features_of(dataplane, raw(ROWS))
    assert not features.flags.owndata
    np.testing.assert_array_equal(features, ROWS.astype(np.float32))
    bad = ROWS[:1].copy()
    bad[0, 1] = np.nan
    with pytest.raises(InvalidInputError) as info:
        features_of(dataplane, raw(bad))
    assert info.value.errors[0]["loc"] == ["raw_input_contents", 0, 0, 1]


def test_mixed_contents_fields_are_rejected(dataplane: DataPlane) -> None:
    request = typed(ROWS[:1])
    request.inputs[0].contents.fp64_contents.extend([1.0])
    with pytest.raises(ModelServerError, match=r"FP32 values go in contents\.fp32_contents, not "):
        features_of(dataplane, request)


def test_raw_and_contents_together_are_rejected(dataplane: DataPlane) -> None:
    request = typed(ROWS[:1])
    request.raw_input_contents.append(bytes(16))
    with pytest.raises(ModelServerError, match="both contents and raw_input_contents") as info:
        features_of(dataplane, request)
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    ("parameters", "outputs", "expected"),
    [
        ({}, [], [("probabilities", False), ("label", False)]),
        ({"binary_data_output": True}, [], [("probabilities", True), ("label", True)]),
        ({}, [("label", None)], [("label", False)]),
        (
            {},
            [("label", True), ("probabilities", None)],
            [("label", True), ("probabilities", False)],
        ),
    ],
)
def test_requested_outputs_for_typed_input(
    parameters: dict[str, bool], outputs: list[tuple[str, bool | None]], expected: object
) -> None:
    request = typed(ROWS[:1])
    for key, value in parameters.items():
        request.parameters[key].bool_param = value
    for name, flag in outputs:
        output = request.outputs.add(name=name)
        if flag is not None:
            output.parameters["binary_data"].bool_param = flag
    assert v2_grpc.requested_outputs(request, NAMES) == expected


def test_raw_input_defaults_to_raw_output() -> None:
    assert v2_grpc.requested_outputs(raw(ROWS[:1]), NAMES) == [
        ("probabilities", True),
        ("label", True),
    ]
    request = raw(ROWS[:1])
    request.parameters["binary_data_output"].bool_param = False
    assert v2_grpc.requested_outputs(request, NAMES) == [("probabilities", False), ("label", False)]


def test_reading_parameters_does_not_add_them() -> None:
    request = typed(ROWS[:1])
    v2_grpc.requested_outputs(request, NAMES)
    assert "binary_data_output" not in request.parameters


@pytest.mark.parametrize("raw_output", [False, True])
def test_encode_response(dataplane: DataPlane, raw_output: bool) -> None:
    feeds = dataplane.validate(ROWS.tolist(), loc=("data",))
    probabilities = dataplane.predict(feeds)
    outputs = [("probabilities", raw_output), ("label", False)]
    tensors = asyncio.run(v2.OutputCatalog(dataplane).compute(feeds, outputs))
    response = v2_grpc.encode_response(dataplane, "req-1", outputs, tensors)
    assert (response.model_name, response.model_version, response.id) == (
        "iris_svc",
        "1",
        "req-1",
    )
    proba, label = response.outputs
    assert (proba.name, proba.datatype, list(proba.shape)) == ("probabilities", "FP32", [3, 3])
    assert (label.name, label.datatype, list(label.shape)) == ("label", "BYTES", [3])
    if raw_output:  # 1 つでも raw なら全部 raw（仕様）
        assert len(response.raw_output_contents) == 2
        assert not proba.contents.fp32_contents
        values = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
        assert response.raw_output_contents[1] == v2.serialize_bytes(LABELS)
    else:
        assert not response.raw_output_contents
        values = np.asarray(proba.contents.fp32_contents, dtype=np.float32)
        assert [v.decode() for v in label.contents.bytes_contents] == LABELS
    np.testing.assert_array_equal(values.reshape(3, 3), probabilities.astype(np.float32))


def test_model_metadata_is_the_rest_metadata(dataplane: DataPlane) -> None:
    catalog = v2.OutputCatalog(dataplane)
    metadata = v2_grpc.model_metadata(dataplane, catalog, "onnx_onnxv1")
    rest = v2.model_metadata(dataplane, catalog, "onnx_onnxv1")
    assert metadata.name == rest["name"]
    assert list(metadata.versions) == rest["versions"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["outputs"]
    ]
    assert list(metadata.inputs[0].shape) == [-1, 4]


def test_raw_contents_must_match_the_inputs(dataplane: DataPlane) -> None:
    request = raw(ROWS[:1])
    request.raw_input_contents.append(bytes(16))
    with pytest.raises(ModelServerError, match="2 entries for 1 inputs"):
        features_of(dataplane, request)


def test_typed_value_count_must_match_the_shape(dataplane: DataPlane) -> None:
    request = typed(ROWS[:2])
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend([3, 4])
    with pytest.raises(ModelServerError, match=r"has 8 values but shape \[3, 4\] needs 12"):
        features_of(dataplane, request)


def test_binary_flags_must_be_bool_params() -> None:
    request = typed(ROWS[:1])
    request.parameters["binary_data_output"].int64_param = 1
    with pytest.raises(ModelServerError, match="'binary_data_output' must be a bool_param"):
        v2_grpc.requested_outputs(request, NAMES)
