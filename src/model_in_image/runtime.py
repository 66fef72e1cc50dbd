"""モデルまわりのファイルの読み込み（sha256・ラベルファイル）と、旧名の再エクスポート。

モデルそのものは model パッケージ（OnnxModel：シグネチャ・種類・クラス名）。
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy.typing as npt

from model_in_image.errors import ModelLoadError
from model_in_image.model.onnx_model import (
    SMALL_BATCH_ROWS,
    NonFiniteOutputError,
    session_options,
)

__all__ = [
    "MAX_LABEL_FILE_BYTES",
    "SMALL_BATCH_ROWS",
    "FloatArray",
    "NonFiniteOutputError",
    "load_labels",
    "model_sha256",
    "session_options",
    "sha256_of",
]

# ラベルファイルの上限（/label と /metadata で毎回そのまま返すため）
MAX_LABEL_FILE_BYTES = 1_048_576

FloatArray = npt.NDArray[Any]


def sha256_of(path: Path) -> str:
    """ファイルの sha256（16 進）。"""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_sha256(path: Path) -> str:
    """モデルファイルの sha256（読めなければ ModelLoadError）。"""
    try:
        return sha256_of(path)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model file not found: {path}") from exc
    except OSError as exc:
        raise ModelLoadError(f"model file cannot be read: {path}: {exc}") from exc


def load_labels(path: Path) -> dict[str, str]:
    """ラベルファイル（{"0": "setosa", ...}）を読み込む（大きすぎ・空の名前・重複は拒否）。"""
    try:
        size = path.stat().st_size
        if size > MAX_LABEL_FILE_BYTES:
            raise ModelLoadError(
                f"label file is {size} bytes, over the limit of {MAX_LABEL_FILE_BYTES}: {path}"
            )
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"label file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"label file is not valid JSON: {path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ModelLoadError(f"label file must be a non-empty JSON object: {path}")
    if not all(isinstance(v, str) for v in raw.values()):
        raise ModelLoadError(f"label names must be strings: {path}")
    names = [v.strip() for v in raw.values()]
    if not all(names):
        raise ModelLoadError(f"label names must not be empty: {path}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelLoadError(f"label names must be unique; repeated: {duplicates}: {path}")
    return {str(k): v for k, v in raw.items()}
