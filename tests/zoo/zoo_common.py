"""動物園のケースの共通部品：ケースの形、登録、見本の行の選び方（.zoo-venv でだけ使う）。"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEED = 0
ROWS = 6
# 名前 → (フレームワークでの計算の説明, 値)
Values = tuple[str, Any]


@dataclass(frozen=True)
class Built:
    """1 ケース：書き出したモデルのバイト列と、フレームワーク自身が計算した期待値。

    head はサーバーの /predict にあたる ONNX の出力の名前、label_output はラベルの出力の名前
    （書き出しの確かめにだけ使う）。extra_outputs は V2 で名前で引くほかの出力（ONNX の名前）。
    """

    name: str
    description: str
    framework: str
    exporter: str
    packages: tuple[str, ...]
    kind: str
    model: bytes
    rows: list[Any]
    head: str
    prediction: Values
    classes: list[str] | None = None
    labels: Values | None = None
    label_output: str | None = None
    extra_outputs: dict[str, Values] = field(default_factory=dict)
    notes: str = ""
    # フレームワークの値との許容誤差 (rtol, atol)。float32 の書き出しで精度が落ちるものだけ緩める
    tolerance: tuple[float, float] = (1e-5, 1e-5)

    @property
    def compare(self) -> dict[str, Values]:
        """ONNX の出力名 → フレームワークの値（書き出しの確かめ用）。"""
        result = {self.head: self.prediction, **self.extra_outputs}
        if self.label_output is not None and self.labels is not None:
            result[self.label_output] = self.labels
        return result


Builder = Callable[[], Built]
REGISTRY: dict[str, Builder] = {}


def case(builder: Builder) -> Builder:
    """ケースを登録する（名前は関数名から build_ を除いたもの）。各ケースの前に乱数を固定する。"""

    def seeded() -> Built:
        seed_everything()
        return builder()

    REGISTRY[builder.__name__.removeprefix("build_")] = seeded
    return builder


def seed_everything(seed: int = SEED) -> None:
    """Python と numpy の乱数を固定する（ケースの順に左右されない）。"""
    random.seed(seed)
    np.random.seed(seed)  # フレームワークが大域の乱数を使うことがある


def pick_rows(target: Sequence[Any], count: int = ROWS) -> list[int]:
    """各クラスから順に 1 行ずつ取る行番号（すべてのクラスが見本に出る）。"""
    labels = list(dict.fromkeys(target))
    by_label = {label: [i for i, t in enumerate(target) if t == label] for label in labels}
    picked: list[int] = []
    while len(picked) < min(count, len(target)):
        for label in labels:
            if by_label[label] and len(picked) < count:
                picked.append(by_label[label].pop(0))
    return sorted(picked)


def json_rows(features: Any) -> list[Any]:
    """見本の行を JSON（利用者が /predict に送る形）にする。float32 で表せる値に丸める。"""
    return np.asarray(features).tolist()  # type: ignore[no-any-return]


def f32(features: Any) -> np.ndarray:
    """学習に使う float32 の行列（ONNX の入力と同じ値で予測を比べる）。"""
    return np.asarray(features, dtype=np.float32)


def strings(values: Sequence[Any]) -> list[str]:
    """クラスを文字列にする（サーバーは 3 を "3" と名付ける）。"""
    return [str(v) for v in values]


def classifier(
    estimator: Any, features: Any, model: bytes, *, rows: list[Any] | None = None, **fields: Any
) -> Built:
    """scikit-learn の API を持つ分類器のケース（確率・クラス・ラベルはその分類器が計算する）。"""
    return Built(
        kind="classifier",
        model=model,
        rows=json_rows(features) if rows is None else rows,
        prediction=("predict_proba(X)", estimator.predict_proba(features)),
        classes=strings(estimator.classes_),
        labels=("predict(X)", np.ravel(estimator.predict(features))),
        **fields,
    )


def regressor(estimator: Any, features: Any, model: bytes, **fields: Any) -> Built:
    """scikit-learn の API を持つ回帰のケース。"""
    return Built(
        kind="regressor",
        model=model,
        rows=json_rows(features),
        prediction=("predict(X)", estimator.predict(features)),
        **fields,
    )
