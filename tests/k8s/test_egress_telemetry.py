"""components/egress-telemetry：観測機能を有効にしたときに開く、唯一の外向き通信。

リポジトリの k8s/ を一時ディレクトリに写し、コンポーネントを使うオーバーレイを作って描画する。
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .manifests import K8S_DIR, Obj, network_policy, render
from .test_schemas import VERSIONS, validate_all

pytestmark = pytest.mark.k8s

COMPONENT = "egress-telemetry"
PARAMS_KIND = "TelemetryEgress"
KUBE_DNS = {"namespace": "kube-system", "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
OTLP_COLLECTOR = {
    "namespace": "observability",
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "opentelemetry-collector"}},
    "port": 4318,
}
OTHER_SINK = {"namespace": "otel", "podSelector": {"matchLabels": {"app": "sink"}}, "port": 9000}
COLLECTORS = [
    pytest.param(OTLP_COLLECTOR, id="otlp-http-4318"),
    pytest.param(OTHER_SINK, id="other-sink"),
]


def params(collector: dict[str, Any], dns: dict[str, Any]) -> Obj:
    """オーバーレイが置く宛先（クラスタには送られない local-config）。"""
    return {
        "apiVersion": "model-in-image.local/v1",
        "kind": PARAMS_KIND,
        "metadata": {
            "name": "telemetry-egress",
            "annotations": {"config.kubernetes.io/local-config": "true"},
        },
        "spec": {"collector": collector, "dns": dns},
    }


def telemetry_overlay(tmp_path: Path, params_obj: Obj | None) -> Path:
    """production にコンポーネントを足したオーバーレイ（params_obj が None なら宛先なし）。"""
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, k8s)
    overlay = k8s / "overlays" / "telemetry"
    overlay.mkdir()
    resources = ["../production"]
    if params_obj is not None:
        (overlay / "telemetry-egress.yaml").write_text(yaml.safe_dump(params_obj), encoding="utf-8")
        resources.append("telemetry-egress.yaml")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "components": [f"../../components/{COMPONENT}"],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    return overlay


def peer(target: dict[str, Any]) -> Obj:
    """名前空間とラベルで選ぶ宛先。"""
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": target["namespace"]}},
        "podSelector": target["podSelector"],
    }


@pytest.mark.parametrize("collector", COLLECTORS)
def test_component_opens_only_the_collector_and_cluster_dns(
    kubectl: str, rendered: dict[str, list[Obj]], tmp_path: Path, collector: dict[str, Any]
) -> None:
    objects = render(kubectl, telemetry_overlay(tmp_path, params(collector, KUBE_DNS)))
    spec = network_policy(objects)["spec"]
    assert spec["egress"] == [
        {"to": [peer(collector)], "ports": [{"port": collector["port"], "protocol": "TCP"}]},
        {
            "to": [peer(KUBE_DNS)],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        },
    ]
    production = network_policy(rendered["production"])["spec"]
    assert spec["ingress"] == production["ingress"]
    assert spec["policyTypes"] == production["policyTypes"]


def test_params_stay_out_of_the_cluster_and_the_result_is_valid(
    kubectl: str, rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objects = render(kubectl, telemetry_overlay(tmp_path, params(OTLP_COLLECTOR, KUBE_DNS)))
    assert PARAMS_KIND not in {o["kind"] for o in objects}
    assert len(objects) == len(rendered["production"])
    assert validate_all(objects, VERSIONS[-1]) == []


def test_the_component_refuses_to_build_without_a_destination(kubectl: str, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=PARAMS_KIND):
        render(kubectl, telemetry_overlay(tmp_path, None))
