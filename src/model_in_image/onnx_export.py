"""較正済み SVC（CalibratedClassifierCV(SVC, sigmoid, ensemble=False)）の小さな ONNX 変換器。

skl2onnx 標準の変換は小さなノードを 60 個以上並べ、1 行の推論に約 50 µs かかる。
ここでは同じ計算（ovo 決定値 → ovr 変換 → シグモイド較正 → 正規化）を
行列演算 17 ノード（StandardScaler の Scaler と合わせてモデル全体で 18 ノード）で表し、
skl2onnx の登録 API（update_registered_converter）で使う。
学習時だけ使う（skl2onnx は学習用の依存グループにある）。
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import guess_proto_type
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
from skl2onnx.proto import onnx_proto
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import SVC


class CalibratedSVC(CalibratedClassifierCV):  # type: ignore[misc]
    """CalibratedClassifierCV(SVC, method="sigmoid", ensemble=False) 専用の型（変換器の登録用）。"""


def pair_matrices(n_classes: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """ovo の組 (i, j) から ovr への行列 T（i に +1, j に -1）と、票の定数 C-1-i。"""
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    t = np.zeros((len(pairs), n_classes), dtype=np.float32)
    for k, (i, j) in enumerate(pairs):
        t[k, i], t[k, j] = 1.0, -1.0
    base = np.array([n_classes - 1 - i for i in range(n_classes)], dtype=np.float32)
    return t, base


def _check(model: CalibratedSVC) -> tuple[SVC, Any]:
    if (
        model.method != "sigmoid"
        or model.ensemble is not False
        or len(model.calibrated_classifiers_) != 1
    ):
        raise ValueError("CalibratedSVC must use method='sigmoid' and ensemble=False")
    calibrated = model.calibrated_classifiers_[0]
    svc = calibrated.estimator
    if not isinstance(svc, SVC) or svc.decision_function_shape != "ovr" or len(svc.classes_) < 3:
        raise ValueError("CalibratedSVC needs a multi-class SVC with decision_function_shape='ovr'")
    return svc, calibrated


def convert_calibrated_svc(scope: Any, operator: Any, container: Any) -> None:
    """ovo 決定値 → sklearn の _ovr_decision_function → expit(-(a f + b)) → 行和で正規化。"""
    model: CalibratedSVC = operator.raw_operator
    svc, calibrated = _check(model)
    n_classes = len(svc.classes_)
    dtype = guess_proto_type(operator.inputs[0].type)
    if dtype != onnx_proto.TensorProto.FLOAT:
        raise ValueError("CalibratedSVC export supports float inputs only")
    name = scope.get_unique_variable_name

    def const(label: str, value: np.ndarray[Any, Any]) -> str:
        var: str = name(label)
        container.add_initializer(
            var, onnx_proto.TensorProto.FLOAT, list(value.shape), value.ravel().tolist()
        )
        return var

    def node(op: str, inputs: list[str], label: str, **attrs: Any) -> str:
        out: str = name(label)
        container.add_node(op, inputs, [out], name=scope.get_unique_operator_name(op), **attrs)
        return out

    # 1) ovo 決定値（skl2onnx 標準変換と同じ属性）
    raw_label, dec = name("svm_label"), name("ovo")
    container.add_node(
        "SVMClassifier",
        operator.inputs[0].full_name,
        [raw_label, dec],
        op_domain="ai.onnx.ml",
        op_version=1,
        name=scope.get_unique_operator_name("SVMc"),
        kernel_type=svc.kernel.upper(),
        kernel_params=[float(svc._gamma), float(svc.coef0), float(svc.degree)],
        support_vectors=svc.support_vectors_.astype(np.float32).ravel().tolist(),
        coefficients=svc.dual_coef_.astype(np.float32).ravel().tolist(),
        rho=svc.intercept_.astype(np.float32).tolist(),
        vectors_per_class=svc.n_support_.tolist(),
        classlabels_ints=list(range(n_classes)),
        post_transform="NONE",
    )
    # 2) ovr 変換：votes = base - [dec<0] T、conf = dec T、ovr = votes + conf / (3|conf| + 3)
    t, base = pair_matrices(n_classes)
    t_var = const("pair_t", t)
    negative = node(
        "Cast", [node("Less", [dec, const("zero", np.array(0, np.float32))], "neg")], "negf", to=1
    )
    votes = node("Sub", [const("base", base), node("MatMul", [negative, t_var], "vt")], "votes")
    conf = node("MatMul", [dec, t_var], "conf")
    scaled = node(
        "Add",
        [
            node(
                "Mul", [node("Abs", [conf], "abs"), const("three", np.array(3, np.float32))], "m3"
            ),
            const("three_b", np.array(3, np.float32)),
        ],
        "den",
    )
    ovr = node("Add", [votes, node("Div", [conf, scaled], "tc")], "ovr")
    # 3) シグモイド較正：expit(-(a f + b))
    a = np.array([c.a_ for c in calibrated.calibrators], dtype=np.float32)
    b = np.array([c.b_ for c in calibrated.calibrators], dtype=np.float32)
    logits = node(
        "Add", [node("Mul", [ovr, const("minus_a", -a)], "af"), const("minus_b", -b)], "logit"
    )
    proba = node("Sigmoid", [logits], "sig")
    # 4) 行和で正規化
    total = node("ReduceSum", [proba, container_axes(container, scope)], "total", keepdims=1)
    container.add_node(
        "Div",
        [proba, total],
        [operator.outputs[1].full_name],
        name=scope.get_unique_operator_name("Div"),
    )
    container.add_node(
        "ArgMax",
        [operator.outputs[1].full_name],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("ArgMax"),
        axis=1,
        keepdims=0,
    )


def container_axes(container: Any, scope: Any) -> str:
    """ReduceSum（opset 13 以降）の軸入力 [1]。"""
    var: str = scope.get_unique_variable_name("axis1")
    container.add_initializer(var, onnx_proto.TensorProto.INT64, [1], [1])
    return var


def register() -> None:
    """skl2onnx に CalibratedSVC の変換器を登録する。"""
    update_registered_converter(
        CalibratedSVC,
        "ModelInImageCalibratedSVC",
        calculate_linear_classifier_output_shapes,
        convert_calibrated_svc,
        options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
    )
