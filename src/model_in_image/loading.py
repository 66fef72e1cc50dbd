"""設定からデータプレーンを作る：完全性の確認、モデル、クラス名、モデルカード、サンプル。"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model_in_image.dataplane import DataPlane, Limits
from model_in_image.errors import ModelLoadError
from model_in_image.model.classes import resolve_classes
from model_in_image.model.kinds import Postprocess
from model_in_image.model.onnx_model import OnnxModel, zero_feeds
from model_in_image.modelcard import ModelCard
from model_in_image.runtime import load_labels, model_sha256
from model_in_image.settings import Settings

logger = logging.getLogger(__name__)


def load_dataplane(settings: Settings, *, card: bool = True) -> DataPlane:
    """設定からモデルを読み込み、完全性を確かめ、ウォームアップ済みのデータプレーンを作る。

    sha256 の照合はモデルを解析する前に行う（改ざんされたファイルを ONNX Runtime に渡さない）。
    """
    sha256 = model_sha256(settings.model_filepath)
    if settings.model_sha256 and settings.model_sha256 != sha256:
        raise ModelLoadError(
            f"model integrity check failed: {settings.model_filepath} has sha256 "
            f"{sha256}, expected {settings.model_sha256} (MODEL_SHA256)"
        )
    model_card = read_card(settings, sha256) if card else None
    model = OnnxModel(
        settings.model_filepath,
        sha256=sha256,
        intra_op_threads=settings.ort_intra_op_threads,
        postprocess=settings.model_postprocess,
        kind=settings.model_kind,
    )
    label_path = settings.resolved_label_filepath
    classes = resolve_model_classes(model, label_path)
    sample = settings.sample_data or (model_card.sample_input if model_card else None)
    if sample is None:
        sample = default_sample(model)
        logger.warning("no sample input (SAMPLE_DATA or model card): using zeros for /metadata")
    dataplane = DataPlane(
        model=model,
        model_name=settings.resolved_model_name,
        sample=sample,
        limits=Limits(max_rows=settings.max_request_rows),
        classes=classes,
        card=model_card,
    )
    logger.info(
        "model loaded: name=%s file=%s sha256=%s %s classes=%s",
        dataplane.model_name,
        model.model_path,
        model.sha256,
        model.describe(),
        len(classes) if classes is not None else "none",
    )
    return dataplane


def open_dataplane(
    model: Path,
    labels: Path | None,
    *,
    name: str,
    sample: list[Any] | None = None,
    max_rows: int = 1000,
    postprocess: Postprocess = Postprocess.NONE,
) -> DataPlane:
    """モデルカードを読まずにデータプレーンを作る（card・train が使う。検証は起動と同じ）。"""
    settings = Settings(
        model_filepath=model,
        label_filepath=labels,
        model_card_filepath=None,
        model_name=name,
        sample_data=sample,
        max_request_rows=max_rows,
        model_postprocess=postprocess,
    )
    return load_dataplane(settings, card=False)


def resolve_model_classes(model: OnnxModel, label_path: Path | None) -> tuple[str, ...] | None:
    """ラベルファイル（任意）とグラフのクラスから、列の順のクラス名を決める。"""
    labels = load_labels(label_path) if label_path is not None else None
    return resolve_classes(
        model.class_codes,
        model.num_classes,
        labels,
        label_path,
        string_codes=model.graph.classes is not None and not model.graph.class_codes_are_ints,
    )


def default_sample(model: OnnxModel) -> list[Any]:
    """サンプルが無いときの 1 行（0 と空文字列）。複数入力なら入力名をキーとする行。"""
    feeds = zero_feeds(model.signature)
    if len(feeds) == 1:
        return list(next(iter(feeds.values())).tolist())
    return [{name: array[0].tolist() for name, array in feeds.items()}]


def read_card(settings: Settings, sha256: str) -> ModelCard | None:
    """モデルカードを読み、モデルファイルの sha256 と一致するか確かめる。"""
    path = settings.resolved_model_card_filepath
    if not path.exists():
        if settings.model_card_filepath is not None:
            raise ModelLoadError(f"model card not found: {path}")
        return None
    card = ModelCard.read(path)
    if card.sha256 != sha256:
        raise ModelLoadError(
            f"model integrity check failed: {settings.model_filepath} has sha256 "
            f"{sha256}, but its model card {path} records {card.sha256}"
        )
    return card
