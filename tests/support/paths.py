"""リポジトリ内の場所。"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "models"
MODEL_FILE = MODELS_DIR / "iris_svc.onnx"
LABEL_FILE = MODELS_DIR / "label.json"
CARD_FILE = MODELS_DIR / "model_card.json"
REFERENCE_DIR = MODELS_DIR / "reference"
