"""Kubernetes の章（docs/kubernetes.md）のコマンドがマニフェストと make に合っていること。"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from . import load_client
from .manifests import (
    APP,
    CONTAINER,
    NAMESPACE,
    ROOT,
    Obj,
    container,
    only,
    overlay_names,
    split_image,
)

pytestmark = pytest.mark.k8s

DOC = ROOT / "docs" / "kubernetes.md"
SECURITY_DOC = ROOT / "docs" / "security.md"
MAKEFILES = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
K8S_TARGETS = ["k8s-render", "k8s-load-image", "deploy", "undeploy", "test-k8s", "test-e2e-k8s"]


@pytest.fixture(scope="module")
def doc() -> str:
    """チュートリアルの本文。"""
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def commands(doc: str) -> str:
    """bash のコードブロックだけ（継続行を 1 行に結合）。"""
    blocks = re.findall(r"```bash\n(.*?)```", doc, re.S)
    return re.sub(r"\\\n\s*", " ", "\n".join(blocks))


def make_targets() -> set[str]:
    """Makefile と mk/*.mk で定義されたターゲット。"""
    targets: set[str] = set()
    for path in MAKEFILES:
        targets |= set(re.findall(r"^([a-zA-Z0-9_.-]+):", path.read_text(encoding="utf-8"), re.M))
    return targets


def test_no_machine_specific_paths(doc: str) -> None:
    assert "/opt/homebrew" not in doc
    assert "/Users/" not in doc


def test_overlays_named_in_the_doc_exist(commands: str, doc: str) -> None:
    named = set(re.findall(r"k8s/overlays/([a-z0-9-]+)", doc))
    assert named <= set(overlay_names())
    assert {"minikube", "minikube-hpa"} <= set(re.findall(r"apply -k k8s/overlays/(\S+)", commands))


def test_every_namespace_flag_is_the_manifests_namespace(commands: str) -> None:
    flags = re.findall(r"(?:-n|--namespace)[ =](\S+)", commands)
    assert flags
    assert set(flags) == {NAMESPACE}
    assert set(re.findall(r"delete namespace (\S+)", commands)) == {NAMESPACE}


def test_object_names_match(commands: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["minikube"]
    deployment = only(objects, "Deployment")["metadata"]["name"]
    service = only(objects, "Service")["metadata"]["name"]
    assert set(re.findall(r"deployment[/ ]([a-z0-9-]+)", commands)) == {deployment}
    assert set(re.findall(r"(?:\bsvc/|minikube service )([a-z0-9-]+)", commands)) == {service}
    assert set(re.findall(r"service-name=([a-z0-9-]+)", commands)) == {service}
    assert set(re.findall(r" ([a-z0-9-]+)=model-in-image-pattern", commands)) == {CONTAINER}


def test_label_selector_selects_the_pods(commands: str, rendered: dict[str, list[Obj]]) -> None:
    labels = only(rendered["minikube"], "Deployment")["spec"]["template"]["metadata"]["labels"]
    for key, value in re.findall(r"-l ([\w./-]+)=([\w.-]+)", commands):
        if key == "app":
            assert labels[key] == value
    assert f"-l app={APP}" in commands


def test_loaded_image_is_the_one_the_overlay_runs(
    commands: str, rendered: dict[str, list[Obj]]
) -> None:
    image = container(rendered["minikube"])["image"]
    loaded = re.findall(r"minikube image load (\S+)", commands)
    assert loaded[0] == image
    assert {split_image(i)[0] for i in loaded} == {split_image(image)[0]}
    assert f"docker build -t {image} ." in DOC.read_text(encoding="utf-8")


def test_node_port_and_apply_output_match(doc: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["minikube"]
    ports = only(objects, "Service")["spec"]["ports"]
    assert ",".join(f"{p['port']}:{p['nodePort']}/TCP" for p in ports) in doc
    created = re.findall(r"^([a-z]+)(?:\.[a-z0-9.]+)?/(\S+) created$", doc, re.M)
    assert created == [(o["kind"].lower(), o["metadata"]["name"]) for o in objects]


def test_hpa_numbers_match(doc: str, rendered: dict[str, list[Obj]]) -> None:
    spec = only(rendered["minikube-hpa"], "HorizontalPodAutoscaler")["spec"]
    target = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
    row = re.search(
        r"^model-in-image\s+Deployment/(\S+)\s+cpu: \d+%/(\d+)%\s+(\d+)\s+(\d+)", doc, re.M
    )
    assert row, "HPA sample output missing"
    assert row.groups() == (APP, str(target), str(spec["minReplicas"]), str(spec["maxReplicas"]))


def test_three_species_are_predicted_as_documented(commands: str, doc: str) -> None:
    sent = re.findall(r"'\{\"data\": \[\[([\d., ]+)\]\]\}'", commands)
    for features, expected in load_client.SAMPLES:
        assert ", ".join(str(v) for v in features) in sent
        assert f'{{"prediction":"{expected}"}}' in doc


def test_probe_paths_in_the_notes_are_the_manifests(
    doc: str, rendered: dict[str, list[Obj]]
) -> None:
    ctr = container(rendered["minikube"])
    assert f"readiness は `{ctr['readinessProbe']['httpGet']['path']}`" in doc
    assert f"liveness は `{ctr['livenessProbe']['httpGet']['path']}`" in doc


def test_k8s_make_targets_are_documented_and_defined(doc: str) -> None:
    # 章の make が実在することは tests/test_docs_links.py が全ページについて確かめる
    assert set(K8S_TARGETS) <= set(re.findall(r"`make ([a-z0-9][a-z0-9-]*)", doc))
    assert set(K8S_TARGETS) <= make_targets()


def test_make_k8s_render_writes_every_overlay(
    kubectl: str, rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "k8s-render", f"K8S_OUT={out}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in out.glob("*.yaml")) == sorted(rendered)
    for name, objects in rendered.items():
        assert f"{out}/{name}.yaml: {len(objects)} objects" in result.stdout


def test_security_doc_names_real_targets_and_files() -> None:
    text = SECURITY_DOC.read_text(encoding="utf-8")
    used = set(re.findall(r"\bmake ([a-z0-9][a-z0-9-]*)", text))
    assert {"release", "checkov"} <= used
    assert used <= make_targets(), used - make_targets()
    paths = re.findall(r"`((?:k8s|tests|scripts|tools)/[^`\s<]+)`", text)
    assert len(paths) >= 10
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []
