"""表の行をモデルの入力にする：値を入力の型にし、HTTP と同じ DataPlane.validate で検証する。

CSV のセル（文字列）・Arrow の値・JSON の行のどれも、まず HTTP の行と同じ形（1 入力なら値の
リスト、複数入力なら入力名をキーとする辞書）にしてから validate に渡す。一括で通らなければ
1 行ずつ検証し直し、不正な行を Problem（チャンクの中の位置・列・理由）にして除く。
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from model_in_image.batch.base import RowError
from model_in_image.batch.columns import ColumnPlan
from model_in_image.batch.outputs import Block
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError
from model_in_image.model.onnx_model import Feeds
from model_in_image.model.signature import TensorSpec

IndexArray = npt.NDArray[np.intp]
ROW_INDEX = re.compile(r"^row \d+ ")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


@dataclass(frozen=True, slots=True)
class Problem:
    """不正な行：チャンクの中の位置（0 始まり）、理由、分かれば列（1 始まりの番号・名前）。"""

    index: int
    reason: str
    column: int | None = None
    name: str | None = None

    def where(self) -> str:
        """誤りの文面の列の部分（例 ", column 3 'petal length (cm)'"。列が分からなければ空）。"""
        parts = [str(self.column)] if self.column is not None else []
        if self.name is not None:
            parts.append(repr(self.name))
        return f", column {' '.join(parts)}" if parts else ""


@dataclass(slots=True)
class Decoded:
    """検証済みの入力（valid の位置の行だけ）と不正な行。feeds は有効な行が無ければ None。

    kept は有効な行の、残す入力の列（--keep-columns。形式が埋める）。
    """

    feeds: Feeds | None
    valid: IndexArray
    problems: list[Problem] = field(default_factory=list)
    kept: list[Block] = field(default_factory=list)

    def before(self, index: int) -> Decoded:
        """チャンクの位置 index より前の有効な行だけ（不正な行で止まるとき、手前までを書く）。"""
        count = int(np.searchsorted(self.valid, index))
        feeds = None
        if self.feeds is not None and count:
            feeds = {name: array[:count] for name, array in self.feeds.items()}
        kept = [Block(block.names, block.values[:count]) for block in self.kept]
        return Decoded(feeds, self.valid[:count], kept=kept)


class Decoder:
    """行をモデルの入力にする（plan は表の列の使い方。JSON の行なら None）。"""

    def __init__(self, dataplane: DataPlane, plan: ColumnPlan | None) -> None:
        self._dataplane = dataplane
        self._plan = plan
        self._inputs = dataplane.model.signature.inputs

    @property
    def numeric(self) -> bool:
        """実数 1 入力 [N, 幅] のモデルか（実数の行列の速い経路が使える）。"""
        return self._dataplane.input_width is not None

    def matrix(self, matrix: Any) -> Decoded | None:
        """モデルの要素の順の実数の行列 [N, 幅] を検証する（どこかの行が不正なら None）。"""
        try:
            feeds = self._dataplane.validate(matrix, loc=())
        except InvalidInputError:
            return None
        return Decoded(feeds, np.arange(len(matrix), dtype=np.intp))

    def cells(self, rows: Sequence[Sequence[Any] | Problem]) -> Decoded:
        """表の行（入力の列の順の値。読めなかった行は Problem）を入力の型にして検証する。"""
        plan = self._plan
        assert plan is not None  # 表の行は列の使い方とともにだけ届く
        values: list[Any] = []
        for index, row in enumerate(rows):
            if isinstance(row, Problem):
                values.append(row)
            elif len(row) != plan.width:
                values.append(Problem(index, _width_reason(len(row), plan)))
            else:
                values.append(self._row(index, row, plan))
        return self.values(values)

    def _row(self, index: int, row: Sequence[Any], plan: ColumnPlan) -> Any:
        """1 行を HTTP の行の形にする（入力の型にできない値は Problem）。"""
        items: dict[str, list[Any]] = {spec.name: [] for spec in self._inputs}
        for slot, source in zip(plan.slots, plan.sources, strict=True):
            try:
                items[slot.spec.name].append(cast(row[source], slot.spec))
            except RowError as exc:
                number, name = plan.describe(source)
                return Problem(index, exc.reason, number, name)
        shaped = {spec.name: _shaped(items[spec.name], spec) for spec in self._inputs}
        return next(iter(shaped.values())) if len(shaped) == 1 else shaped

    def values(self, items: Sequence[Any]) -> Decoded:
        """HTTP の行の形の値（不正と分かった行は Problem）を検証する。"""
        good = [i for i, item in enumerate(items) if not isinstance(item, Problem)]
        problems = [item for item in items if isinstance(item, Problem)]
        rows = [items[i] for i in good]
        try:
            feeds = self._dataplane.validate(rows, loc=()) if rows else None
        except InvalidInputError:
            return self._one_by_one(items)
        return Decoded(feeds, np.array(good, dtype=np.intp), problems)

    def _one_by_one(self, items: Sequence[Any]) -> Decoded:
        """1 行ずつ検証して、通った行だけをまとめて入力にする。"""
        good: list[int] = []
        problems: list[Problem] = []
        for index, item in enumerate(items):
            if isinstance(item, Problem):
                problems.append(item)
                continue
            try:
                self._dataplane.validate([item], loc=())
            except InvalidInputError as exc:
                problems.append(self._problem(index, exc))
            else:
                good.append(index)
        rows = [items[i] for i in good]
        feeds = self._dataplane.validate(rows, loc=()) if rows else None
        return Decoded(feeds, np.array(good, dtype=np.intp), problems)

    def _problem(self, index: int, exc: InvalidInputError) -> Problem:
        """1 行だけを検証したときの誤りを、入力の列の番号・名前つきの Problem にする。"""
        error = exc.errors[0]
        reason = ROW_INDEX.sub("row ", error["msg"])
        loc = list(error["loc"])[1:]  # 先頭は行の位置（0）
        spec = self._inputs[0]
        if loc and isinstance(loc[0], str):  # 複数入力：入力名
            spec = next((s for s in self._inputs if s.name == loc[0]), spec)
            name, loc = str(loc[0]), loc[1:]
        else:
            name = None
        position = loc[0] if loc and isinstance(loc[0], int) else None
        if self._plan is None:  # JSON の行：配列の中の位置、またはキー
            return Problem(index, reason, None if position is None else position + 1, name)
        if name is None and position is None:
            return Problem(index, reason)
        source = self._plan.source_of(spec, position)
        if source is None:
            return Problem(index, reason)
        return Problem(index, reason, *self._plan.describe(source))


def _width_reason(count: int, plan: ColumnPlan) -> str:
    if plan.header is None:
        return f"row has {count} values; the model expects {plan.width}"
    return f"row has {count} values; the header has {plan.width} columns"


def _shaped(values: list[Any], spec: TensorSpec) -> Any:
    """1 入力分の値を HTTP の行の形にする（[N] はスカラー、[N, 1] と [N, k] はリスト）。"""
    return values[0] if spec.row_shape == () else values


def cast(value: Any, spec: TensorSpec) -> Any:
    """表の値 1 つを入力の型の Python の値にする（文字列は解析。範囲は validate が確かめる）。"""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        raise RowError("missing value")
    kind = "U" if spec.is_string else spec.dtype.kind
    if isinstance(value, str):
        return value if kind == "U" else _parse(value, kind, spec)
    if kind in "iu" and isinstance(value, float) and value.is_integer():
        return int(value)  # pandas は欠損のある整数の列を実数にする
    return value


def _parse(text: str, kind: str, spec: TensorSpec) -> Any:
    """CSV のセルを解析する（np.loadtxt と同じく桁区切りの _ は認めない）。"""
    cell = text.strip()
    try:
        if "_" in cell:
            raise ValueError
        if kind == "f":
            return float(cell)
        if kind in "iu":
            return int(cell)
    except ValueError:
        what = "a number" if kind == "f" else f"an integer ({spec.element})"
        raise RowError(f"{text!r} is not {what}") from None
    if cell.lower() in _TRUE:
        return True
    if cell.lower() in _FALSE:
        return False
    raise RowError(f"{text!r} is not a boolean (true/false or 1/0)")
