"""CLI のテストが作る 2 つ目のモデル：Iris と別の幅・クラス・出力形式と、既定でない名前のカード。"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_in_image.modelcard import ModelCard
from model_in_image.runtime import sha256_of
from support.models import export_onnx, write_labels

# CSV で引用符が要る名前（カンマと二重引用符）にして、出力の書き方も確かめる
FRUIT_LABELS = {"0": "small, round", "1": 'long "banana"'}
FRUIT_SAMPLE = [[0.5, -0.25, 1.0]]


@dataclass(frozen=True)
class CardModel:
    """モデル・ラベル・モデルカード（カードは model_card.json ではないので既定では読まれない）。"""

    model: Path
    labels: Path
    card: Path


def write_fruit_model(directory: Path) -> CardModel:
    """特徴量 3・クラス 2、ZipMap 出力の LogisticRegression（クラス 1 は x > z）を書き出す。"""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    features = rng.normal(size=(80, 3)).astype(np.float32)
    target = (features[:, 0] > features[:, 2]).astype(np.int64)
    estimator = LogisticRegression().fit(features, target)
    model = directory / "fruit.onnx"
    model.write_bytes(export_onnx(estimator, features[:1], zipmap=True))
    labels = write_labels(directory / "fruit-labels.json", FRUIT_LABELS)
    card = directory / "fruit-card.json"
    ModelCard(
        name="fruit",
        model_file=model.name,
        sha256=sha256_of(model),
        input_width=3,
        classes=list(FRUIT_LABELS.values()),
        sample_input=FRUIT_SAMPLE,
        feature_names=["x", "y", "z"],
    ).write(card)
    return CardModel(model, labels, card)
