"""共有の検証規則の性質（hypothesis）：どんな入力も、検証済みの配列になるか 4xx の例外になる。

解析できた配列は有限の float64 で、形は (N, 幅)、1 ≤ N ≤ 上限。それ以外の例外は出さない。
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model_in_image.api.v2.endpoints import infer
from model_in_image.codecs import seed
from model_in_image.dataplane import DataPlane, Limits
from model_in_image.errors import InvalidInputError, ModelServerError
from model_in_image.model.inputs import FLOAT32_MAX, check_count, float_matrix

MAX_ROWS = 3
WIDTH = 4
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEEP = 100_000


def validate_rows(rows: Any, *, width: int, limits: Limits, loc: tuple[str, ...]) -> Any:
    """[N, 幅] の実数 1 入力の検証（DataPlane.validate の速い経路と同じ関数）。"""
    check_count(rows, limits.max_rows, loc)
    return float_matrix(rows, width, np.dtype(np.float64), loc)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e6, max_value=1e6)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=40,
)
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**40), 10**40)
cells = numbers | st.floats(-10, 10) | st.booleans() | st.none() | st.text(max_size=3)
rows = st.lists(st.lists(cells, min_size=0, max_size=WIDTH + 2), min_size=0, max_size=MAX_ROWS + 2)
float_rows = st.lists(
    st.lists(
        st.floats(allow_nan=True, allow_infinity=True), min_size=WIDTH - 1, max_size=WIDTH + 1
    ),
    min_size=0,
    max_size=MAX_ROWS + 2,
)


def dumps(value: Any) -> bytes:
    """NaN・Infinity もそのまま書く（標準外のリテラルも敵対的な入力に含める）。"""
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def predict_bodies(draw: st.DrawFn) -> bytes:
    """シード API のボディ：正しいもの・惜しいもの・何でもない JSON・壊れたバイト列。"""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return dumps({"data": draw(rows), **draw(st.dictionaries(st.text(max_size=4), scalars))})
    if choice == 1:
        return dumps(draw(json_values))
    if choice == 2:
        return draw(st.binary(max_size=64))
    return dumps({"data": draw(rows)})[: draw(st.integers(0, 40))]


@pytest.fixture(scope="module")
def small_dataplane(dataplane: DataPlane) -> DataPlane:
    """上限 3 行のデータプレーン（上限の境界も試す）。"""
    return dataclasses.replace(dataplane, limits=Limits(max_rows=MAX_ROWS))


def assert_valid_features(array: Any, dtype: Any = np.float64) -> None:
    """検証を通った配列の性質。"""
    assert isinstance(array, np.ndarray)
    assert array.dtype == dtype
    assert array.ndim == 2
    assert array.shape[1] == WIDTH
    assert 1 <= array.shape[0] <= MAX_ROWS
    assert np.isfinite(array).all()
    assert (np.abs(array) <= FLOAT32_MAX).all()


def assert_client_error(exc: ModelServerError) -> None:
    """クライアントの誤りとして 4xx で返る。"""
    assert 400 <= exc.status_code < 500, exc.message
    assert exc.message


@PROPERTY
@given(body=predict_bodies())
@example(body=b"[" * DEEP)
@example(body=b'{"data": ' + b"[" * DEEP)
@example(body=b'{"extra": ' + b"[" * DEEP)
@example(body=b'{"extra": ' + b'{"a": ' * DEEP)
@example(body=b'{"extra": ' + b"[" * 2000 + b"]" * 2000 + b', "data": [[1, 2, 3, 4]]}')
@example(body='{"data": [[5.1, 3.5, 1.4, "\udcff"]]}'.encode("utf-8", "surrogatepass"))
@example(body=b'{"data": [[5.1, 3.5, 1.4, 0.2]]}\xff')
def test_parse_returns_features_or_client_error(small_dataplane: DataPlane, body: bytes) -> None:
    try:
        feeds = small_dataplane.validate(seed.decode_rows(body), loc=("body", "data"))
    except ModelServerError as exc:
        assert_client_error(exc)
    else:
        (spec,) = small_dataplane.model.signature.inputs
        assert list(feeds) == [spec.name]
        assert_valid_features(feeds[spec.name], spec.dtype)


@PROPERTY
@given(body=predict_bodies())
def test_decode_rows_types_or_client_error(body: bytes) -> None:
    try:
        decoded = seed.decode_rows(body)
    except ModelServerError as exc:
        assert_client_error(exc)
    else:
        assert isinstance(decoded, list)
        assert all(isinstance(v, float) for row in decoded for v in row)


@PROPERTY
@given(data=float_rows)
def test_validate_rows_accepts_exactly_finite_rectangles(data: list[list[float]]) -> None:
    limits = Limits(max_rows=MAX_ROWS)
    expected_ok = (
        1 <= len(data) <= MAX_ROWS
        and all(len(row) == WIDTH for row in data)
        and all(np.isfinite(v) and abs(v) <= FLOAT32_MAX for row in data for v in row)
    )
    if not expected_ok:
        with pytest.raises(InvalidInputError) as info:
            validate_rows(data, width=WIDTH, limits=limits, loc=("body", "data"))
        assert info.value.status_code == 422
        assert info.value.errors[0]["loc"][:2] == ["body", "data"]
        return
    features = validate_rows(data, width=WIDTH, limits=limits, loc=("body", "data"))
    assert_valid_features(features)
    np.testing.assert_array_equal(features, np.array(data, dtype=np.float64))


@st.composite
def v2_requests(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """V2 のボディと Inference-Header-Content-Length（JSON・バイナリ・壊れたもの）。"""
    shape = draw(st.lists(st.integers(-2, 6), min_size=0, max_size=3))
    tensor: dict[str, Any] = {
        "name": draw(st.text(max_size=4)),
        "shape": shape,
        "datatype": draw(st.sampled_from(["FP32", "FP64", "INT64", "BYTES", ""])),
    }
    raw = b""
    if draw(st.booleans()):
        tensor["data"] = draw(st.one_of(rows, st.lists(cells, max_size=12), json_values))
    if draw(st.booleans()):
        raw = draw(st.binary(max_size=64))
        size = draw(st.one_of(st.just(len(raw)), st.integers(-1, 80)))
        tensor["parameters"] = {"binary_data_size": size}
    request: dict[str, Any] = {"inputs": draw(st.lists(st.just(tensor), min_size=0, max_size=2))}
    if draw(st.booleans()):
        names = st.sampled_from(["probabilities", "label", "logits"])
        request["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": names}), max_size=3))
    header = dumps(draw(st.one_of(st.just(request), json_values)))
    if not raw and draw(st.booleans()):
        return header, None
    length = draw(st.one_of(st.just(len(header)), st.integers(0, len(header) + 10)))
    return header + raw, length


@PROPERTY
@given(request=v2_requests())
@example(
    request=(
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ' + b"[" * DEEP,
        None,
    )
)
@example(request=(b'{"inputs": [], "x": ' + b"[" * DEEP, None))
def test_v2_infer_answers_or_client_error(
    small_dataplane: DataPlane, request: tuple[bytes, int | None]
) -> None:
    body, header_length = request
    try:
        response = asyncio.run(infer(small_dataplane, body, header_length))
    except ModelServerError as exc:
        assert_client_error(exc)
    else:
        outputs = json.loads(response.json_part)["outputs"]
        assert {o["name"] for o in outputs} <= {"probabilities", "label"}


@PROPERTY
@given(data=st.lists(st.lists(numbers, min_size=WIDTH, max_size=WIDTH), min_size=1, max_size=4))
def test_range_check_in_python_equals_the_numpy_one(data: list[list[float]]) -> None:
    """小さな入力の範囲検査（Python）と大きな入力の検査（numpy）は同じ値を同じ位置で拒否する。"""
    outcomes = []
    dtype = np.dtype(np.float64)
    for check in (
        lambda: float_matrix(data, WIDTH, dtype, ("x",)),  # 小さなリスト：Python の経路
        lambda: float_matrix(np.array(data, dtype=np.float64), WIDTH, dtype, ("x",)),  # numpy
    ):
        try:
            check()
        except InvalidInputError as exc:
            outcomes.append(exc.errors[0]["loc"])
        else:
            outcomes.append(None)
    python, numpy = outcomes
    assert python == numpy
