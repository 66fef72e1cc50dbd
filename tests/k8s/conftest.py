"""k8s テストの共通フィクスチャ（kubectl が無ければスキップ、CI では失敗）。"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import pytest

from support.figures import figure_recorder
from support.requirements import unavailable as missing

from .manifests import BASE_DIR, OVERLAYS_DIR, Obj, find_kubectl, overlay_names, render

REQUIRE_KUBECTL = "MII_REQUIRE_KUBECTL"
REQUIRE_DOCKER = "MII_REQUIRE_DOCKER"


def unavailable(reason: str, require: str = REQUIRE_KUBECTL) -> NoReturn:
    """テストに要るものが無い：普段はスキップ、require の環境変数が 1（CI）なら失敗。"""
    missing(reason, require)


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl のパス。無ければスキップ（MII_REQUIRE_KUBECTL=1 なら失敗）。"""
    path = find_kubectl()
    if path is None:
        unavailable("kubectl not found on PATH: install kubectl to render k8s/ with kustomize")
    return path


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[Obj]]:
    """オーバーレイ名 -> 描画したオブジェクト（セッションで 1 回だけ描画する）。"""
    return {name: render(kubectl, OVERLAYS_DIR / name) for name in overlay_names()}


@pytest.fixture(scope="session")
def rendered_base(kubectl: str) -> list[Obj]:
    """k8s/base を単独で描画したオブジェクト。"""
    return render(kubectl, BASE_DIR)


@pytest.fixture(scope="session")
def record_summary(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """検査の集計を記録し、テストの最後にまとめて表示する（CI のログに残す）。"""
    return figure_recorder(pytestconfig, "model-in-image Checkov summary (offline)")
