"""推論の列：モデルの種類ごとに、サーバーと同じ値を列にする。

- クラスを持つモデル（分類器・確率/ロジットのネット）：label（/predict/label と同じクラス名）と
  クラスごとの値（確率なら proba_<クラス名>、ロジットなら <出力名>_<クラス名>。/predict の値）
- 回帰：prediction（[N]）、または目的変数ごとの prediction_0..k-1（[N, k]）
- そのほか（テンソルのモデル）：グラフのテンソルの出力ごとに <出力名>（1 行 1 値）、
  または <出力名>_0..（1 行に複数の値。C の順に平らにする）
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model_in_image.batch.base import BatchError
from model_in_image.dataplane import DataPlane
from model_in_image.model.kinds import ModelKind
from model_in_image.model.onnx_model import Array, Feeds

PROBA_PREFIX = "proba_"
LABEL = "label"
PREDICTION = "prediction"


@dataclass(frozen=True, slots=True)
class Block:
    """同じ型の列のまとまり：名前と値（名前が 1 つなら [N]、複数なら [N, 列数]）。"""

    names: tuple[str, ...]
    values: Array


@dataclass(frozen=True, slots=True)
class Layout:
    """推論の列の名前と型（numpy の型。文字列は object）。"""

    names: tuple[str, ...]
    dtypes: tuple[np.dtype[Any], ...]


class Outputs:
    """検証済みの入力を推論して、種類ごとの列（Block の並び）にする。"""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        model = dataplane.model
        self._labelled = dataplane.classes is not None
        self._tensor = model.kind is ModelKind.TENSOR
        # テンソルのモデルの列：出力ごとの（名前, 1 行の値の数）。数はサンプルの推論から
        self._tensors: list[tuple[str, int]] = []
        sample = dataplane.validate(dataplane.sample, loc=())
        if self._tensor:
            outputs = dataplane.infer(sample)[1]
            self._tensors = [
                (spec.name, _row_size(outputs[spec.name]))
                for spec in model.signature.outputs
                if spec.is_tensor
            ]
            blocks = self._tensor_blocks(outputs)
        else:
            blocks = self.score(sample)
        names = tuple(name for block in blocks for name in block.names)
        dtypes = tuple(block.values.dtype for block in blocks for _ in block.names)
        self.layout = Layout(names, dtypes)

    def _value_names(self, width: int) -> tuple[str, ...]:
        model = self._dataplane.model
        if self._labelled:
            prefix = PROBA_PREFIX if model.gives_probabilities else f"{model.heads.primary}_"
            return tuple(prefix + name for name in self._dataplane.labels)
        if width == 0:
            return (PREDICTION,)
        return tuple(f"{PREDICTION}_{j}" for j in range(width))

    def score(self, feeds: Feeds) -> list[Block]:
        """推論して列にする（値はサーバーの /predict と、ラベルは /predict/label と同じ）。"""
        dataplane = self._dataplane
        if self._tensor:
            return self._tensor_blocks(dataplane.infer(feeds)[1])
        if self._labelled:
            values, labels = dataplane.predict_labels(feeds)
            label = np.array(labels, dtype=object)
            return [Block((LABEL,), label), Block(self._value_names(values.shape[1]), values)]
        values = dataplane.predict(feeds)
        width = 0 if values.ndim == 1 else int(np.prod(values.shape[1:]))
        flat = values if values.ndim == 1 else values.reshape(len(values), -1)
        return [Block(self._value_names(width), flat)]

    def _tensor_blocks(self, outputs: dict[str, Array]) -> list[Block]:
        blocks = []
        for name, size in self._tensors:
            array = outputs[name]
            if _row_size(array) != size:
                raise BatchError(
                    f"output {name!r} has {_row_size(array)} values per row here but "
                    f"{size} on the sample input: its columns cannot be fixed"
                )
            if size == 1:
                blocks.append(Block((name,), array.reshape(len(array))))
            else:
                names = tuple(f"{name}_{j}" for j in range(size))
                blocks.append(Block(names, array.reshape(len(array), size)))
        return blocks


def _row_size(array: Array) -> int:
    """1 行の値の数（[N] は 1）。"""
    return int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
