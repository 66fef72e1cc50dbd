"""バッチ推論とデータプレーンの境目（DataPlane を呼ぶのはこのモジュールだけ）。

バッチの残りは BatchModel の check / check_row / predict と、特徴量名・ラベル・出力の数値型
だけを使う。データプレーンの API が変わっても、直すのはここだけで済む。
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from model_in_image.batch.base import RowError
from model_in_image.dataplane import DataPlane, load_dataplane
from model_in_image.errors import InvalidInputError
from model_in_image.runtime import FloatArray
from model_in_image.settings import Settings

Rows = Sequence[Sequence[float]]
ROW_INDEX = re.compile(r"^row \d+ ")


@dataclass(frozen=True, slots=True)
class BatchModel:
    """バッチ推論から見たモデル：検証・推論と、列の名前・出力の形。"""

    dataplane: DataPlane

    @property
    def width(self) -> int:
        """入力の特徴量数。"""
        return self.dataplane.input_width

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """特徴量の名前（モデルカードの feature_names。無ければ None：列は位置で対応させる）。"""
        card = self.dataplane.card
        names = card.feature_names if card is not None else None
        return tuple(names) if names else None

    @property
    def labels(self) -> tuple[str, ...]:
        """クラス番号順のラベル名。"""
        return self.dataplane.labels

    @property
    def probability_dtype(self) -> np.dtype[Any]:
        """確率の数値型（Parquet の列の型）。"""
        return self.dataplane.sample_probabilities.dtype

    @property
    def max_rows(self) -> int:
        """1 回の check / predict に渡せる行数の上限（チャンクの行数）。"""
        return self.dataplane.limits.max_rows

    def check(self, rows: FloatArray | Rows) -> FloatArray | None:
        """行列を検証してモデルの数値型にする。どこかの行が不正なら None。"""
        try:
            # validate は numpy の配列もそのまま受け付ける（型の注釈は行のリスト）
            return self.dataplane.validate(cast("Rows", rows), loc=())
        except InvalidInputError:
            return None

    def check_row(self, row: Sequence[float]) -> None:
        """1 行を検証する（不正なら理由と列番号 1 始まりの RowError）。"""
        try:
            self.dataplane.validate([row], loc=())
        except InvalidInputError as exc:
            error = exc.errors[0]
            loc = error["loc"]
            column = loc[1] + 1 if len(loc) == 2 else None
            raise RowError(ROW_INDEX.sub("row ", error["msg"]), column) from None

    def predict(self, features: FloatArray) -> tuple[list[str], FloatArray]:
        """検証済みの配列を推論して（最尤のラベル, クラスごとの確率）を返す。"""
        probabilities = self.dataplane.predict(features)
        return self.dataplane.labels_of(probabilities), probabilities


def load_batch_model(settings: Settings, chunk_rows: int) -> BatchModel:
    """モデルを読み込む（行数の上限は HTTP の MAX_BATCH_ROWS でなくチャンクの行数）。"""
    return BatchModel(load_dataplane(settings.model_copy(update={"max_batch_rows": chunk_rows})))


_CACHE: dict[tuple[str, int], BatchModel] = {}
_CACHE_LOCK = threading.Lock()


def cached_batch_model(settings: Settings, chunk_rows: int) -> BatchModel:
    """プロセスに 1 つのモデル（設定とチャンクの行数ごと）。パーティションごとには読まない。"""
    key = (settings.model_dump_json(), chunk_rows)
    with _CACHE_LOCK:  # Dask のワーカーはスレッドからも呼ぶ：同時に 2 回読まない
        model = _CACHE.get(key)
        if model is None:
            model = _CACHE[key] = load_batch_model(settings, chunk_rows)
    return model
