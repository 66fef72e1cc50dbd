"""モデルの入出力の仕様（名前・要素の型・形）。ONNX Runtime のセッションから導く。"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model_in_image.errors import ModelLoadError

# ONNX の要素型 → (numpy の型, V2 のデータ型)。文字列は numpy の object 配列で渡す
ELEMENT_TYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "tensor(float)": (np.dtype(np.float32), "FP32"),
    "tensor(double)": (np.dtype(np.float64), "FP64"),
    "tensor(float16)": (np.dtype(np.float16), "FP16"),
    "tensor(int64)": (np.dtype(np.int64), "INT64"),
    "tensor(int32)": (np.dtype(np.int32), "INT32"),
    "tensor(int16)": (np.dtype(np.int16), "INT16"),
    "tensor(int8)": (np.dtype(np.int8), "INT8"),
    "tensor(uint8)": (np.dtype(np.uint8), "UINT8"),
    "tensor(bool)": (np.dtype(np.bool_), "BOOL"),
    "tensor(string)": (np.dtype(object), "BYTES"),
}
SUPPORTED_INPUT_TYPES = ", ".join(t[7:-1] for t in ELEMENT_TYPES)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """入力または出力 1 つ。shape の None は可変の次元（名前付きの次元も None）。"""

    name: str
    onnx_type: str
    shape: tuple[int | None, ...]

    @property
    def is_tensor(self) -> bool:
        """テンソルか（ZipMap の seq(map(...)) などではない）。"""
        return self.onnx_type in ELEMENT_TYPES

    @property
    def dtype(self) -> np.dtype[Any]:
        """numpy の型（テンソル以外は object）。"""
        return ELEMENT_TYPES[self.onnx_type][0] if self.is_tensor else np.dtype(object)

    @property
    def datatype(self) -> str:
        """V2（Open Inference Protocol）のデータ型。"""
        return ELEMENT_TYPES[self.onnx_type][1] if self.is_tensor else "BYTES"

    @property
    def element(self) -> str:
        """要素型の短い名前（float・int64・string など）。"""
        return self.onnx_type[7:-1] if self.onnx_type.startswith("tensor(") else self.onnx_type

    @property
    def is_float(self) -> bool:
        """浮動小数点のテンソルか。"""
        return self.is_tensor and self.dtype.kind == "f"

    @property
    def is_string(self) -> bool:
        """文字列のテンソルか。"""
        return self.onnx_type == "tensor(string)"

    @property
    def rank(self) -> int:
        """次元数。"""
        return len(self.shape)

    @property
    def row_shape(self) -> tuple[int | None, ...]:
        """1 行（バッチの 1 要素）の形。"""
        return self.shape[1:]

    @property
    def fixed_batch(self) -> int | None:
        """バッチの次元が固定ならその大きさ（可変なら None）。"""
        return self.shape[0] if self.shape else None

    @property
    def width(self) -> int | None:
        """[N, 幅] の入力の幅（それ以外は None）。"""
        if self.rank == 2 and self.shape[1] is not None:
            return self.shape[1]
        return None

    def describe(self) -> dict[str, Any]:
        """メタデータ用の表現（可変の次元は -1）。"""
        return {
            "name": self.name,
            "datatype": self.datatype,
            "element": self.element,
            "shape": [-1 if d is None else d for d in self.shape],
        }

    def text(self) -> str:
        """ログ用の短い表現（例: X [N, 4] float）。"""
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.element}"


@dataclass(frozen=True, slots=True)
class Signature:
    """モデルのすべての入力と出力。"""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, session: Any) -> Signature:
        """ONNX Runtime のセッションから導く（提供できない入力は名前を挙げて拒否する）。"""
        inputs = tuple(_spec(i) for i in session.get_inputs())
        outputs = tuple(_spec(o) for o in session.get_outputs())
        for spec in inputs:
            if not spec.is_tensor:
                raise ModelLoadError(
                    f"unsupported input type for input {spec.name!r}: {spec.onnx_type} "
                    f"(supported: tensors of {SUPPORTED_INPUT_TYPES})"
                )
            if spec.rank == 0:
                raise ModelLoadError(
                    f"input {spec.name!r} is a scalar; inputs need a batch dimension"
                )
        batches = {spec.fixed_batch for spec in inputs}
        if len(batches) > 1:
            raise ModelLoadError(
                f"inputs disagree on the batch dimension: "
                f"{', '.join(spec.text() for spec in inputs)}"
            )
        if not outputs:
            raise ModelLoadError("model has no outputs")
        return cls(inputs=inputs, outputs=outputs)

    @property
    def fixed_batch(self) -> int | None:
        """入力のバッチの次元が固定ならその大きさ。"""
        return self.inputs[0].fixed_batch

    def output(self, name: str) -> TensorSpec:
        """名前で出力を引く。"""
        return next(o for o in self.outputs if o.name == name)


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSpec(name=arg.name, onnx_type=arg.type, shape=shape)
