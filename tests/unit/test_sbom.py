"""SBOM の要約（model-in-image info が表示する）。"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from model_in_image.sbom import SBOM_FILE, sbom_path, sbom_summary

BOM = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "metadata": {"component": {"name": "model-in-image", "version": "1.0.0"}},
    "components": [
        {"name": "numpy", "version": "2.4.6"},
        {"name": "onnxruntime", "version": "1.31.1"},
    ],
}


def test_sbom_lives_in_the_python_environment() -> None:
    assert sbom_path() == Path(sys.prefix) / SBOM_FILE


def test_summary(tmp_path: Path) -> None:
    path = tmp_path / SBOM_FILE
    path.write_text(json.dumps(BOM), encoding="utf-8")
    assert sbom_summary(path) == {
        "path": str(path),
        "format": "CycloneDX 1.6",
        "components": 2,
        "packages": ["numpy==2.4.6", "onnxruntime==1.31.1"],
    }


def test_missing_sbom_is_none(tmp_path: Path) -> None:
    assert sbom_summary(tmp_path / SBOM_FILE) is None


def test_broken_sbom_says_why(tmp_path: Path) -> None:
    path = tmp_path / SBOM_FILE
    path.write_text('{"bomFormat": "CycloneDX"}', encoding="utf-8")
    summary = sbom_summary(path)
    assert summary is not None
    assert summary["path"] == str(path)
    assert summary["error"].startswith("KeyError")
