"""Dockerfile とビルド用スクリプトの静的な検査（Docker エンジン不要）。"""

from __future__ import annotations

import re

from model_in_image.card import check_model
from support.paths import CARD_FILE, LABEL_FILE, MODEL_FILE, REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
SLIM = (REPO_ROOT / "scripts" / "image" / "slim.sh").read_text(encoding="utf-8")


def _global_args() -> dict[str, str]:
    """最初の FROM より前の ARG の既定値（外側の ' は Dockerfile と同じく外す）。"""
    head = DOCKERFILE.split("\nFROM ", 1)[0]
    values = dict(re.findall(r"^ARG (\w+)=(.*)$", head, flags=re.MULTILINE))
    return {k: v[1:-1] if v[:1] == v[-1:] == "'" else v for k, v in values.items()}


def test_plain_docker_build_defaults_describe_the_project_model() -> None:
    """素の docker build のラベル（sha256・クラス・入力幅）は models/ のモデルのもの。"""
    facts = check_model(MODEL_FILE, LABEL_FILE, CARD_FILE)
    defaults = _global_args()
    assert {k: defaults[k] for k in facts.build_args()} == facts.build_args(), (
        "update the MODEL_* ARG defaults in the Dockerfile (card --check prints them)"
    )


def test_every_model_argument_reaches_the_check_and_the_labels() -> None:
    names = ("MODEL_FILE", "MODEL_NAME", "MODEL_SHA256", "MODEL_CLASSES", "MODEL_INPUT_WIDTH")
    for name in (*names, "MODEL_POSTPROCESS"):
        assert f'--expect "{name}=${{{name}}}"' in DOCKERFILE
        assert f"${{{name}}}" in DOCKERFILE.split("\nLABEL ", 1)[1]


def test_src_does_not_use_numpy_subpackages_removed_from_the_image() -> None:
    """slim.sh が消す numpy のサブパッケージを、サーバーのコードが使い始めたら気づく。"""
    removed = re.search(r'^NUMPY_REMOVED="([^"]+)"', SLIM, flags=re.MULTILINE)
    assert removed is not None
    names = "|".join(removed.group(1).split())
    pattern = re.compile(
        rf"\b(np|numpy)\.({names})\b|from numpy import .*\b({names})\b|import numpy\.({names})\b"
    )
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}"
        for path in sorted((REPO_ROOT / "src").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders


def test_build_context_allows_what_the_dockerfile_copies() -> None:
    allowed = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for entry in ("!scripts/image/", "!src/", "!uv.lock", "!models/*.onnx", "!models/label.json"):
        assert entry in allowed


def test_the_image_installs_no_extras() -> None:
    """提供用のイメージは extra（parquet・dask）を入れない。"""
    syncs = re.findall(r"uv sync [^\n]*", DOCKERFILE)
    assert len(syncs) == 3  # 依存関係（numpy をソースから・wheel のまま）とプロジェクト
    assert not [line for line in syncs if "--extra" in line or "--all-extras" in line]
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    extras = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    assert '"dask[dataframe]' in extras
    assert '"distributed' in extras
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]\n", 1)[0]
    assert "dask" not in dependencies
    assert "distributed" not in dependencies
