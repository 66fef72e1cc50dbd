"""すべてのオーバーレイが kubectl kustomize で描画でき、作るものが期待どおりであること。"""

from __future__ import annotations

from collections import Counter

import pytest

from .manifests import NAMESPACE, Obj, kinds, overlay_names

pytestmark = pytest.mark.k8s

CORE = [
    "Namespace",
    "ServiceAccount",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "NetworkPolicy",
]
EXPECTED_KINDS = {
    "minikube": CORE,
    "minikube-hpa": [*CORE, "HorizontalPodAutoscaler"],
    "production": [*CORE, "HorizontalPodAutoscaler"],
    # サーバーの隣のバッチ推論（components/batch-job）
    "batch-job": [*CORE, "PersistentVolumeClaim", "Job", "NetworkPolicy"],
}
CLUSTER_SCOPED = {"Namespace"}


def test_overlays_are_the_documented_ones() -> None:
    assert overlay_names() == sorted(EXPECTED_KINDS)


@pytest.mark.parametrize("overlay", sorted(EXPECTED_KINDS))
def test_overlay_creates_expected_objects(rendered: dict[str, list[Obj]], overlay: str) -> None:
    assert Counter(kinds(rendered[overlay])) == Counter(EXPECTED_KINDS[overlay])


def test_base_renders_on_its_own(rendered_base: list[Obj]) -> None:
    assert Counter(kinds(rendered_base)) == Counter(CORE)


@pytest.mark.parametrize("overlay", sorted(EXPECTED_KINDS))
def test_everything_lives_in_one_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for obj in rendered[overlay]:
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert meta["name"] == NAMESPACE
            assert "namespace" not in meta
        else:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"


@pytest.mark.parametrize("overlay", sorted(EXPECTED_KINDS))
def test_names_are_unique_per_kind(rendered: dict[str, list[Obj]], overlay: str) -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for o in rendered[overlay]]
    assert len(keys) == len(set(keys))
