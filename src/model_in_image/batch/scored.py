"""1 チャンクを推論した結果：推論した行のラベルと確率、不正な行（チャンクの中の位置・列・理由）。"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from model_in_image.batch.model import BatchModel
from model_in_image.runtime import FloatArray

IndexArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Problem:
    """不正な行：チャンクの中の位置（0 始まり）、分かれば入力の列番号（1 始まり）、理由。"""

    index: int
    column: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Scored:
    """推論した行（入力の順）と不正な行。kept は推論した行のチャンクの中の位置（None は全行）。"""

    labels: list[str]
    probabilities: FloatArray
    problems: list[Problem] = field(default_factory=list)
    kept: IndexArray | None = None
    inputs: Any = None  # 推論した行の入力の列（pyarrow の Table、--keep-input のときだけ）

    def __len__(self) -> int:
        return len(self.labels)

    def before(self, index: int) -> Scored:
        """チャンクの位置 index より前の行だけ（不正な行で止まるとき、その手前までを書く）。"""
        count = index if self.kept is None else int(np.searchsorted(self.kept, index))
        inputs = None if self.inputs is None else self.inputs.slice(0, count)
        return Scored(self.labels[:count], self.probabilities[:count], inputs=inputs)


def predicted(
    model: BatchModel,
    features: FloatArray,
    problems: list[Problem] | None = None,
    kept: IndexArray | None = None,
) -> Scored:
    """検証済みの行を推論する（0 行なら推論しない）。"""
    if len(features) == 0:
        empty = np.empty((0, len(model.labels)), dtype=model.probability_dtype)
        return Scored([], empty, problems or [], kept)
    labels, probabilities = model.predict(features)
    return Scored(labels, probabilities, problems or [], kept)
