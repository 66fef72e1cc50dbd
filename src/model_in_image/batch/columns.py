"""入力の列とモデルの特徴量の対応：見出しが特徴量を名指すなら名前で、位置は明示したときだけ。"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from model_in_image.batch.base import BatchError


class ColumnMatch(StrEnum):
    """列の対応のさせ方（auto：見出しと特徴量名があれば名前、どちらかが無ければ位置）。"""

    AUTO = "auto"
    NAME = "name"
    POSITION = "position"


def match_columns(
    names: Sequence[str] | None, features: Sequence[str] | None, how: ColumnMatch
) -> list[int] | None:
    """特徴量の順に並べた入力の列番号（0 始まり）。位置で対応させるなら None。

    names は入力の見出し（無ければ None）、features はモデルの特徴量名（無ければ None）。
    見出しが特徴量を名指していないのに位置へ黙って戻ることはしない（--columns position が要る）。
    """
    if how is ColumnMatch.POSITION:
        return None
    if names is None or features is None:
        if how is ColumnMatch.NAME:
            missing = "the input has no header" if names is None else "the model names no features"
            raise BatchError(f"cannot match columns by name: {missing} (use --columns position)")
        return None
    repeated = sorted({name for name in names if names.count(name) > 1} & set(features))
    if repeated:
        raise BatchError(f"input column names repeat: {repeated}")
    missing_names = [name for name in features if name not in names]
    if missing_names:
        raise BatchError(
            f"the input's columns do not name the model's features: missing {missing_names} "
            f"(input columns: {list(names)}); rename them, or pass --columns position "
            "to take the columns in order"
        )
    order = [names.index(name) for name in features]
    return None if order == list(range(len(names))) else order
