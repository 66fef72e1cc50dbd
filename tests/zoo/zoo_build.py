"""動物園のケースを組み立てる共通部品：ケースの登録、データの取り出し、期待値の形。

make_zoo.py と zoo_*.py（フレームワークごと）が使う。フレームワークは .zoo-venv にだけある。
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
SEED = 0
ROWS = 6
TOLERANCE = (1e-5, 1e-5)


@dataclass(frozen=True)
class Built:
    """1 ケース：フレームワークが書き出したモデルのバイト列と、case.json に書く中身。"""

    name: str
    description: str
    framework: str
    framework_version: str
    exporter: str
    kind: str
    model: bytes
    rows: list[Any]
    # ONNX の出力名 → (フレームワークの呼び出し, 値)
    expected: dict[str, tuple[str, Any]]
    classes: list[Any] | None = None
    tolerance: tuple[float, float] = TOLERANCE
    target_names: list[str] | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[], Built]
REGISTRY: dict[str, Builder] = {}


def case(builder: Builder) -> Builder:
    """ケースを登録する（名前は関数名から build_ を除いたもの）。"""
    REGISTRY[builder.__name__.removeprefix("build_")] = builder
    return builder


def seed_everything(seed: int = SEED) -> None:
    """Python と numpy の乱数を固定する（各ケースの最初に呼ぶ：ケースの順に左右されない）。"""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  フレームワークが大域の乱数を使うことがある


def pick_rows(target: Sequence[Any], count: int = ROWS) -> list[int]:
    """各クラスから順に 1 行ずつ取る行番号（すべてのクラスが出る見本）。"""
    labels = list(dict.fromkeys(target))
    by_label = {label: [i for i, t in enumerate(target) if t == label] for label in labels}
    picked: list[int] = []
    while len(picked) < min(count, len(target)):
        for label in labels:
            if by_label[label] and len(picked) < count:
                picked.append(by_label[label].pop(0))
    return sorted(picked)


def json_rows(features: Array) -> list[Any]:
    """見本の行を JSON（利用者が /predict に送る形）にする。"""
    return [[_plain(value) for value in row] for row in features.tolist()]


def _plain(value: Any) -> Any:
    # データセットの値は小数 2〜4 桁：送られてくる JSON の数のとおりに丸めておく
    return round(value, 6) if isinstance(value, float) else value


def column(values: Any) -> list[Any]:
    """[N] の予測を ONNX の出力の形 [N, 1] にする。"""
    return np.asarray(values).reshape(-1, 1).tolist()


def listed(values: Any) -> Any:
    """numpy の値を JSON に書ける Python の値にする。"""
    return np.asarray(values).tolist()
