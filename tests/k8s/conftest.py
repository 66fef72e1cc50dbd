"""k8s テストの共通フィクスチャ（kubectl が無ければスキップ、CI では失敗）。"""

from __future__ import annotations

import os

import pytest

from .manifests import BASE_DIR, OVERLAYS_DIR, Obj, find_kubectl, overlay_names, render

REQUIRE_KUBECTL = "MII_REQUIRE_KUBECTL"


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl のパス。無ければスキップ（MII_REQUIRE_KUBECTL=1 なら失敗）。"""
    path = find_kubectl()
    if path is None:
        reason = "kubectl not found on PATH: install kubectl to render k8s/ with kustomize"
        if os.environ.get(REQUIRE_KUBECTL) == "1":
            pytest.fail(f"{reason} ({REQUIRE_KUBECTL}=1)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[Obj]]:
    """オーバーレイ名 -> 描画したオブジェクト（セッションで 1 回だけ描画する）。"""
    return {name: render(kubectl, OVERLAYS_DIR / name) for name in overlay_names()}


@pytest.fixture(scope="session")
def rendered_base(kubectl: str) -> list[Obj]:
    """k8s/base を単独で描画したオブジェクト。"""
    return render(kubectl, BASE_DIR)
