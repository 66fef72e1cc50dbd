"""ラベル付きの検証データ（CSV）でのモデルの正解率（`card --accuracy-csv FILE --target COLUMN`）。

CSV は見出し行が必須。target の列が正解、残りの列が特徴量。特徴量名（参照データの見出し）が
分かっていて見出しにすべてあれば名前で、無ければ残りの列を並びの順に使う。
正解の値はクラス名、グラフのクラスのコード（例 3・7・10）、それも無いモデルでは列の番号。
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelServerError


class HeldoutDataError(ModelServerError):
    """検証データの CSV の誤り（読めない・列が違う・数値でない・知らないクラス）。"""

    status_code = 400


@dataclass(frozen=True, slots=True)
class LabelledRows:
    """特徴量 [N, 幅] と正解の列番号 [N]。"""

    features: npt.NDArray[np.float64]
    targets: npt.NDArray[np.intp]


def heldout_accuracy(
    dataplane: DataPlane,
    path: Path,
    target: str,
    feature_names: Sequence[str] | None = None,
) -> float:
    """CSV の行を推論し、最尤クラスが正解と一致した割合（小数 6 桁に丸める）。"""
    classes = dataplane.classes
    if dataplane.input_width is None or classes is None:
        raise HeldoutDataError(
            "--accuracy-csv needs a model with class names and one float input [N, width]; "
            f"this model is a {dataplane.kind.value} ({dataplane.model.describe()})"
        )
    rows = read_labelled(path, target, dataplane, feature_names)
    step = dataplane.limits.max_rows
    correct = 0
    for start in range(0, len(rows.features), step):
        chunk = rows.features[start : start + step]
        try:
            feeds = dataplane.validate(cast("Sequence[Sequence[float]]", chunk), loc=())
        except InvalidInputError as exc:
            line = start + int(exc.errors[0]["loc"][0]) + 2
            raise HeldoutDataError(f"{path} line {line}: {exc.message}") from None
        values = dataplane.predict(feeds)
        correct += int((values.argmax(axis=1) == rows.targets[start : start + step]).sum())
    return round(correct / len(rows.features), 6)


def read_labelled(
    path: Path, target: str, dataplane: DataPlane, feature_names: Sequence[str] | None = None
) -> LabelledRows:
    """CSV を特徴量と正解の列番号にする（誤りは行番号つきの HeldoutDataError）。"""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            lines = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HeldoutDataError(f"cannot read held-out data {path}: {exc}") from exc
    if not lines:
        raise HeldoutDataError(f"held-out data {path} is empty")
    header = [cell.strip() for cell in lines[0]]
    if target not in header:
        raise HeldoutDataError(
            f"held-out data {path} has no column {target!r} (columns: {', '.join(header)})"
        )
    columns = _feature_columns(header, target, feature_names)
    width = dataplane.input_width
    if len(columns) != width:
        raise HeldoutDataError(
            f"held-out data {path} has {len(columns)} feature columns besides {target!r}; "
            f"the model expects {width}"
        )
    index = class_index(dataplane.labels, dataplane.model.class_codes)
    target_at = header.index(target)
    features, targets = [], []
    for number, row in enumerate(lines[1:], start=2):
        if len(row) != len(header):
            raise HeldoutDataError(
                f"{path} line {number} has {len(row)} columns; the header has {len(header)}"
            )
        features.append([_number(path, number, row[i]) for i in columns])
        targets.append(_class_of(path, number, row[target_at].strip(), index))
    if not features:
        raise HeldoutDataError(f"held-out data {path} has no data rows")
    return LabelledRows(np.array(features, dtype=np.float64), np.array(targets, dtype=np.intp))


def _feature_columns(
    header: list[str], target: str, feature_names: Sequence[str] | None
) -> list[int]:
    """特徴量の列番号（名前が分かっていて見出しに揃っていれば名前の順）。"""
    if feature_names and set(feature_names) <= set(header) and target not in feature_names:
        return [header.index(name) for name in feature_names]
    return [i for i, name in enumerate(header) if name != target]


def class_index(labels: Sequence[str], codes: Sequence[str] | None) -> dict[str, int]:
    """正解の値 → 列番号。クラス名が最優先、次にグラフのクラスのコード。

    コードを持たないモデル（クラス名の無いネットにラベルファイルを渡したもの）だけ列の番号。
    """
    index = {str(i): i for i in range(len(labels))} if codes is None else {}
    index.update({code: i for i, code in enumerate(codes or ())})
    index.update({name: i for i, name in enumerate(labels)})
    return index


def _number(path: Path, line: int, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise HeldoutDataError(f"{path} line {line}: {cell.strip()!r} is not a number") from None


def _class_of(path: Path, line: int, value: str, index: dict[str, int]) -> int:
    """正解の列番号（pandas が書く 1.0 のようなコードも受け付ける）。"""
    if value in index:
        return index[value]
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number.is_integer() and str(int(number)) in index:
        return index[str(int(number))]
    known = ", ".join(dict.fromkeys(index))
    raise HeldoutDataError(f"{path} line {line}: target {value!r} is not a class (known: {known})")
