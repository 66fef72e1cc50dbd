"""表の列とモデルの入力の対応：見出しがあれば名前で、位置で対応させるのは見出しが無いときだけ。

名前はモデルが決める：複数入力なら入力名、1 入力ならモデルカードの feature_names
（無ければグラフのメタデータ feature_names、[N, 1] の入力なら入力名）。見出しが名前を欠く・
知らない名前を含むときは、両方を挙げて断る（黙って別の順で推論しない）。
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from model_in_image.batch.base import BatchError
from model_in_image.dataplane import DataPlane
from model_in_image.model.signature import TensorSpec


class ColumnMatch(StrEnum):
    """列の対応のさせ方（name：見出しの名前で、見出しの無いファイルは位置で。position：常に位置で）。"""

    NAME = "name"
    POSITION = "position"


@dataclass(frozen=True, slots=True)
class Slot:
    """モデルの入力の 1 要素：入力・その中の位置（スカラーは None）・列名（無ければ None）。"""

    spec: TensorSpec
    index: int | None
    name: str | None


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """入力の列の使い方：各要素の列番号（0 始まり）・残す列・列の数と見出し。

    sources は slots と同じ順。
    """

    slots: tuple[Slot, ...]
    sources: tuple[int, ...]
    keep: tuple[tuple[str, int], ...]
    width: int
    header: tuple[str, ...] | None

    def describe(self, column: int) -> tuple[int, str | None]:
        """列番号（0 始まり）を（1 始まりの番号, 見出しの名前）にする。"""
        return column + 1, None if self.header is None else self.header[column]

    def source_of(self, spec: TensorSpec, index: int | None) -> int | None:
        """入力とその中の位置から、入力の列番号（0 始まり。分からなければ None）。"""
        for slot, source in zip(self.slots, self.sources, strict=True):
            if slot.spec.name == spec.name and (index is None or slot.index in (index, None)):
                return source
        return None


def model_slots(dataplane: DataPlane) -> tuple[Slot, ...]:
    """モデルが表の列に求める要素（入力の順、1 入力なら特徴量の順）。"""
    inputs = dataplane.model.signature.inputs
    if len(inputs) == 1:
        spec = inputs[0]
        width = _row_width(spec)
        names = feature_names(dataplane, width)
        if spec.row_shape in ((), (1,)):
            return (Slot(spec, None, spec.name if names is None else names[0]),)
        return tuple(Slot(spec, j, None if names is None else names[j]) for j in range(width))
    slots: list[Slot] = []
    for spec in inputs:
        width = _row_width(spec)
        if spec.row_shape in ((), (1,)):
            slots.append(Slot(spec, None, spec.name))
        else:
            slots.extend(Slot(spec, j, f"{spec.name}_{j}") for j in range(width))
    return tuple(slots)


def _row_width(spec: TensorSpec) -> int:
    """1 行の値の数（[N]・[N, 1] は 1、[N, k] は k）。それ以外の形は表にできない。"""
    shape = spec.row_shape
    if shape == ():
        return 1
    if len(shape) == 1 and shape[0] is not None:
        return shape[0]
    dims = ", ".join("N" if d is None else str(d) for d in spec.shape)
    raise BatchError(
        f"input {spec.name!r} has shape [{dims}]: CSV and Parquet rows need a fixed width "
        "([N, k]); send such rows as JSON Lines instead"
    )


def feature_names(dataplane: DataPlane, width: int) -> tuple[str, ...] | None:
    """1 入力 [N, 幅] のモデルの特徴量名：カード、無ければグラフのメタデータ feature_names。"""
    card = dataplane.card
    if card is not None and card.feature_names and len(card.feature_names) == width:
        return tuple(card.feature_names)
    text = dataplane.model.graph.metadata.get("feature_names")
    if not text:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        names = [name.strip() for name in text.split(",")]
    if isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def plan_columns(
    slots: Sequence[Slot],
    header: Sequence[str] | None,
    *,
    keep: Sequence[str] = (),
    ignore: Sequence[str] = (),
    match: ColumnMatch = ColumnMatch.NAME,
) -> ColumnPlan:
    """見出し（無ければ None）とモデルの要素を対応させる（誤りは名前を挙げた BatchError）。"""
    if header is None:
        if keep:
            raise BatchError("--keep-columns needs a header row naming the columns")
        width = len(slots)
        return ColumnPlan(tuple(slots), tuple(range(width)), (), width, None)
    names = tuple(header)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BatchError(f"input column names repeat: {repeated}")
    for flag, listed in (("--keep-columns", keep), ("--ignore-columns", ignore)):
        absent = [name for name in listed if name not in names]
        if absent:
            raise BatchError(f"{flag} names columns the input does not have: {absent}")
    if match is ColumnMatch.POSITION:
        return _by_position(slots, names, keep, ignore)
    expected = [slot.name for slot in slots]
    if any(name is None for name in expected):
        raise BatchError(
            "the input has a header, but the model names no features (no feature_names in "
            "its model card or graph): pass --columns position to take the columns in "
            "order, --no-header if the first row is data, or give a card with feature_names"
        )
    missing = [name for name in expected if name not in names]
    unknown = [n for n in names if n not in expected and n not in keep and n not in ignore]
    if missing or unknown:
        wrong = [f"missing {missing}"] * bool(missing) + [f"unknown {unknown}"] * bool(unknown)
        raise BatchError(
            f"the input's header does not match the model's features: {', '.join(wrong)}; "
            f"the model expects {expected} (any order; pass other columns through with "
            "--keep-columns or leave them out with --ignore-columns)"
        )
    sources = tuple(names.index(name) for name in expected if name is not None)
    kept = tuple((name, names.index(name)) for name in keep)
    return ColumnPlan(tuple(slots), sources, kept, len(names), names)


def _by_position(
    slots: Sequence[Slot], names: tuple[str, ...], keep: Sequence[str], ignore: Sequence[str]
) -> ColumnPlan:
    """--columns position：残す・無視する列を除いた列を、順にモデルの要素とする。"""
    features = [i for i, name in enumerate(names) if name not in keep and name not in ignore]
    if len(features) != len(slots):
        raise BatchError(
            f"--columns position: the input has {len(features)} feature columns "
            f"({[names[i] for i in features]}); the model expects {len(slots)}"
        )
    kept = tuple((name, names.index(name)) for name in keep)
    return ColumnPlan(tuple(slots), tuple(features), kept, len(names), names)
