"""モデルカード（学習時や `model-in-image card` が書き出す小さな JSON）。

reference はドリフト監視の基準：学習データの各特徴量を分位点で区切ったビンの割合と最小・最大。
回帰モデルのカードは prediction_reference（参照データの行でのモデルの予測の同じ形の分布）も持つ。
ビンの規則（bin_counts）は書き出す側と監視する側で共通にここで決める。
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model_in_image.errors import ModelLoadError
from model_in_image.model.kinds import ModelKind

DEFAULT_BINS = 10
# 回帰の予測の目的変数の名前（1 値なら prediction、[N, k] なら prediction_0 .. prediction_k-1）
PREDICTION = "prediction"


class FeatureReference(BaseModel):
    """1 特徴量の参照分布。

    edges はビンの内側の境界（昇順・重複なし、ビン数 - 1 個）。値 x は edges のうち x より
    小さいものの数を番号とするビンに入る（境界と等しい値は下のビン、範囲外は端のビン）。
    """

    model_config = ConfigDict(frozen=True)

    name: str
    min: float
    max: float
    edges: list[float]
    proportions: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureReference:
        """ビンの数・境界の順・割合の合計が揃っていること。"""
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError("proportions must have one more entry than edges")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly increasing")
        if abs(sum(self.proportions) - 1.0) > 1e-6 or min(self.proportions) < 0:
            raise ValueError("proportions must be non-negative and sum to 1")
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class ReferenceStatistics(BaseModel):
    """学習（参照）データの特徴量ごとの分布。"""

    model_config = ConfigDict(frozen=True)

    rows: int = Field(ge=1)
    features: list[FeatureReference] = Field(min_length=1)


class PredictionReference(BaseModel):
    """回帰モデルの予測の参照分布（カードの参照データの行での予測。目的変数ごとのビン）。"""

    model_config = ConfigDict(frozen=True)

    rows: int = Field(ge=1)
    targets: list[FeatureReference] = Field(min_length=1)


def bin_counts(edges: Sequence[float], values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """values を edges のビンに数える（長さ len(edges) + 1）。"""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def reference_statistics(
    features: np.ndarray[Any, Any], names: Sequence[str], bins: int = DEFAULT_BINS
) -> ReferenceStatistics:
    """[N, 幅] の参照データから、分位点のビンの割合と最小・最大を作る。"""
    data = np.asarray(features, dtype=np.float64)
    if data.ndim != 2 or len(data) == 0 or data.shape[1] != len(names):
        raise ValueError(f"reference data must be [N, {len(names)}] with N >= 1")
    if not np.isfinite(data).all():
        raise ValueError("reference data must be finite")
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    result = []
    for name, column in zip(names, data.T, strict=True):
        # 最大値と等しい境界は最後のビンを空にするだけなので除く。丸めた境界で数える
        cuts = np.unique(np.round(np.quantile(column, quantiles), 9))
        edges = [float(e) for e in cuts if e < column.max()]
        counts = bin_counts(edges, column)
        result.append(
            FeatureReference(
                name=name,
                min=float(column.min()),
                max=float(column.max()),
                edges=edges,
                proportions=[round(float(c) / len(column), 9) for c in counts],
            )
        )
    return ReferenceStatistics(rows=len(data), features=result)


def prediction_targets(values: np.ndarray[Any, Any]) -> list[str]:
    """回帰の予測 [N] / [N, 1] / [N, k] の目的変数の名前。"""
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
        return [PREDICTION]
    return [f"{PREDICTION}_{i}" for i in range(values.shape[1])]


def prediction_reference(
    values: np.ndarray[Any, Any], bins: int = DEFAULT_BINS
) -> PredictionReference:
    """参照データの行での回帰の予測から、目的変数ごとの分位点のビンの割合を作る。"""
    names = prediction_targets(values)
    statistics = reference_statistics(values.reshape(len(values), -1), names, bins)
    return PredictionReference(rows=statistics.rows, targets=statistics.features)


def prediction_reference_problem(
    reference: PredictionReference, kind: str, values: np.ndarray[Any, Any]
) -> str | None:
    """カードの予測の参照分布がモデルに合わない理由（合えば None）。values はモデルの予測。"""
    if kind != ModelKind.REGRESSOR:
        return (
            f"model card has a prediction_reference but the model is a {kind}: "
            "the prediction reference is for regressors only (remove it from the card)"
        )
    claimed, actual = [t.name for t in reference.targets], prediction_targets(values)
    if claimed != actual:
        return (
            f"model card prediction_reference has targets {claimed} but the model's "
            f"predictions give {actual}"
        )
    return None


class ModelCard(BaseModel):
    """学習結果の記録。sha256 は ONNX ファイルの完全性確認に使う。

    input_name・input_dtype（float32 / float64）・output_kind（tensor / zipmap）は
    モデルから導いた値。
    """

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    name: str
    model_file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input_name: str | None = None
    input_dtype: str | None = None
    # 実数 1 入力 [N, 幅] のモデルだけが幅を持つ。クラスはクラス名を持つモデルだけ
    input_width: int | None = Field(default=None, ge=1)
    classes: list[str] | None = None
    output_kind: str | None = None
    # モデルの種類（classifier・probabilities・logits・regressor・tensor）とすべての入出力
    kind: str | None = None
    inputs: list[dict[str, Any]] | None = None
    outputs: list[dict[str, Any]] | None = None
    postprocess: str | None = None
    heldout_accuracy: float | None = None
    sample_input: list[Any] = Field(min_length=1)
    library_versions: dict[str, str] = Field(default_factory=dict)
    feature_names: list[str] | None = None
    reference: ReferenceStatistics | None = None
    # 回帰モデルだけ（無ければ JSON に書かない：分類器のカードは前と同じバイト列）
    prediction_reference: PredictionReference | None = None

    @model_validator(mode="after")
    def _widths_agree(self) -> ModelCard:
        """特徴量名と参照分布の数は入力幅と同じ。"""
        width = self.input_width
        if self.feature_names is not None and len(self.feature_names) != width:
            raise ValueError("feature_names must have input_width entries")
        if self.reference is not None and len(self.reference.features) != width:
            raise ValueError("reference must describe input_width features")
        return self

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """ファイルから読み込む（壊れていれば ModelLoadError）。"""
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise ModelLoadError(f"model card is not valid: {path}: {exc}") from exc

    def to_json(self) -> str:
        """キー順を固定した JSON（prediction_reference は有るときだけ）。"""
        exclude = {"prediction_reference"} if self.prediction_reference is None else None
        return self.model_dump_json(indent=2, exclude_none=False, exclude=exclude)

    def write(self, path: Path) -> None:
        """キー順を固定して書き出す（再学習でバイト単位で同じになる）。"""
        path.write_text(self.to_json() + "\n", encoding="utf-8")
