"""ラベル付きの検証データ（CSV）でのモデルの正解率（`card --accuracy-csv`）。

CSV は見出し行が必須。target の列が正解（ラベル名、またはクラス番号）、残りの列が特徴量。
特徴量名が分かっていて見出しにすべてあれば名前で、無ければ残りの列を並びの順に使う。
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_in_image.errors import ModelServerError
from model_in_image.runtime import OnnxClassifier

CHUNK_ROWS = 10_000


class HeldoutDataError(ModelServerError):
    """検証データの CSV の誤り（読めない・列が違う・数値でない・知らないクラス）。"""

    status_code = 400


@dataclass(frozen=True, slots=True)
class LabelledRows:
    """特徴量 [N, 幅] とクラス番号 [N]。"""

    features: np.ndarray[tuple[int, int], np.dtype[np.float64]]
    targets: np.ndarray[tuple[int], np.dtype[np.intp]]


def heldout_accuracy(
    classifier: OnnxClassifier,
    path: Path,
    target: str,
    feature_names: Sequence[str] | None = None,
) -> float:
    """CSV の行を推論し、最尤クラスが正解と一致した割合（小数 6 桁に丸める）。"""
    rows = read_labelled(path, target, classifier, feature_names)
    dtype = classifier.input_dtype
    with np.errstate(over="ignore"):  # float32 の範囲外は無限大になり、次の行で報告する
        features = rows.features.astype(dtype)
    if not np.isfinite(features).all():
        raise HeldoutDataError(
            f"{path}: a feature value is outside the {np.dtype(dtype).name} range"
        )
    correct = 0
    for start in range(0, len(features), CHUNK_ROWS):
        probabilities = classifier.predict_proba(features[start : start + CHUNK_ROWS])
        chunk = rows.targets[start : start + CHUNK_ROWS]
        correct += int((np.asarray(probabilities).argmax(axis=1) == chunk).sum())
    return round(correct / len(features), 6)


def read_labelled(
    path: Path,
    target: str,
    classifier: OnnxClassifier,
    feature_names: Sequence[str] | None = None,
) -> LabelledRows:
    """CSV を特徴量とクラス番号にする（誤りは行番号つきの HeldoutDataError）。"""
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
    width = classifier.signature.input_width
    if len(columns) != width:
        raise HeldoutDataError(
            f"held-out data {path} has {len(columns)} feature columns besides {target!r}; "
            f"the model expects {width}"
        )
    classes = _class_index(classifier.labels)
    known = f"classes: {', '.join(classifier.labels)}, or their numbers 0-{len(classes) - 1}"
    target_at = header.index(target)
    features, targets = [], []
    for number, row in enumerate(lines[1:], start=2):
        if len(row) != len(header):
            raise HeldoutDataError(
                f"{path} line {number} has {len(row)} columns; the header has {len(header)}"
            )
        features.append([_number(path, number, row[i]) for i in columns])
        targets.append(_class_of(path, number, row[target_at].strip(), classes, known))
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


def _class_index(labels: Sequence[str]) -> dict[str, int]:
    """正解の値 → クラス番号（ラベル名が優先、次に番号そのもの）。"""
    index = {str(i): i for i in range(len(labels))}
    index.update({name: i for i, name in enumerate(labels)})
    return index


def _number(path: Path, line: int, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise HeldoutDataError(f"{path} line {line}: {cell.strip()!r} is not a number") from None
    if not np.isfinite(value):
        raise HeldoutDataError(f"{path} line {line}: {cell.strip()!r} is not a finite number")
    return value


def _class_of(path: Path, line: int, value: str, classes: dict[str, int], known: str) -> int:
    """正解のクラス番号（pandas が書く 1.0 のような番号も受け付ける）。"""
    if value in classes:
        return classes[value]
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number.is_integer() and str(int(number)) in classes:
        return int(number)
    raise HeldoutDataError(f"{path} line {line}: target {value!r} is not a class ({known})")
