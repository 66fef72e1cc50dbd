"""イメージの Python 環境の SBOM（CycloneDX JSON）の場所と要約。

SBOM はイメージのビルド時に、実際に入っているパッケージから作り、その環境の中に置く
（イメージでは /model_in_image_pattern/.venv/sbom.cdx.json、ラベル io.model-in-image.sbom）。
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

SBOM_FILE = "sbom.cdx.json"


def sbom_path() -> Path:
    """この Python 環境の SBOM の場所。"""
    return Path(sys.prefix) / SBOM_FILE


def sbom_summary(path: Path | None = None) -> dict[str, Any] | None:
    """SBOM の場所・形式・部品の数（無ければ None、読めなければ error を付ける）。"""
    path = path or sbom_path()
    if not path.is_file():
        return None
    try:
        bom = orjson.loads(path.read_bytes())
        components = bom["components"]
        return {
            "path": str(path),
            "format": f"{bom['bomFormat']} {bom['specVersion']}",
            "components": len(components),
            "packages": sorted(f"{c['name']}=={c.get('version', '?')}" for c in components),
        }
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return {"path": str(path), "error": f"{type(exc).__name__}: {exc}"}
