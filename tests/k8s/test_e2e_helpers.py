"""E2E の小道具をクラスタなしで確かめる（偽の kubectl、負荷 Pod の妥当性、スキップ理由）。"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

from . import cluster, load_client
from .cluster import Kube, load_command, load_pod, port_forward, skip_reason
from .manifests import APP, NAMESPACE, Obj, only

pytestmark = pytest.mark.k8s

FAKE_KUBECTL = """\
import json, sys, time
args = sys.argv[1:]
if "port-forward" in args:
    print("Forwarding from 127.0.0.1:43210 -> 8000", flush=True)
    print("Forwarding from [::1]:43210 -> 8000", flush=True)
    time.sleep(60)
elif "version" in args:
    print(json.dumps({"serverVersion": {"major": "1", "minor": "31+"}}))
else:
    sys.stderr.write("error: boom\\n")
    sys.exit(1)
"""


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> Kube:
    """決まった出力を返す偽の kubectl。"""
    path = tmp_path / "kubectl"
    path.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}", encoding="utf-8")
    path.chmod(0o755)
    return Kube(str(path))


def test_port_forward_reports_the_local_port_and_stops(fake_kubectl: Kube) -> None:
    with port_forward(fake_kubectl, f"svc/{APP}", 8000) as port:
        assert port == 43210


def test_server_version_is_parsed(fake_kubectl: Kube) -> None:
    assert fake_kubectl.server_version() == (1, 31)


def test_failed_kubectl_calls_explain_themselves(fake_kubectl: Kube) -> None:
    with pytest.raises(AssertionError, match="boom"):
        fake_kubectl.run("get", "pods")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "opt-in"),
        ({"MII_E2E_K8S": "1"}, "KUBECONFIG is not set"),
        ({"MII_E2E_K8S": "1", "KUBECONFIG": "/nonexistent/config"}, "not found"),
    ],
)
def test_e2e_says_why_it_skips(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    monkeypatch.delenv("MII_E2E_K8S", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reason = skip_reason("/usr/bin/kubectl")
    assert reason is not None
    assert expected in reason


def test_e2e_runs_when_opted_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\n", encoding="utf-8")
    monkeypatch.setenv("MII_E2E_K8S", "1")
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert skip_reason("/usr/bin/kubectl") is None
    assert skip_reason(None) == "kubectl not found on PATH"


def test_image_loaders() -> None:
    image = "model-in-image-pattern:v1.0"
    assert load_command("minikube", "minikube", image) == [
        "minikube",
        "-p",
        "minikube",
        "image",
        "load",
        image,
    ]
    assert load_command("kind", "kind-dev", image) == [
        "kind",
        "load",
        "docker-image",
        image,
        "--name",
        "dev",
    ]
    assert load_command("none", "docker-desktop", image) is None
    with pytest.raises(AssertionError, match="MII_E2E_LOADER"):
        load_command("podman", "x", image)


def test_load_pod_is_valid_and_restricted(rendered: dict[str, list[Obj]]) -> None:
    pod = load_pod("mii-e2e-load", "model-in-image-pattern:v1.0", "Never", 10, 30)
    assert kv.validate(pod, kv.latest_version(), strict=True)
    spec = pod["spec"]
    ctx = spec["containers"][0]["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod["metadata"]["namespace"] == NAMESPACE
    # Service に選ばれない（負荷 Pod 自身へ振り分けられない）
    selector = only(rendered["minikube"], "Service")["spec"]["selector"]
    labels = pod["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items())
    # python3 -c で渡すスクリプトは load_client.py そのもの
    assert spec["containers"][0]["command"][:2] == ["python3", "-c"]
    assert spec["containers"][0]["args"] == [cluster.SERVICE_HOST, "8000", "10", "30"]


def test_load_client_counts_failures() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # 何も待ち受けていないポート
    reports: list[dict[str, object]] = []
    stats = load_client.run("127.0.0.1", port, 3, 10.0, reports.append)
    assert (stats["ok"], stats["failed"], stats["done"]) == (0, 3, True)
    assert reports[-1] == stats
    assert "ConnectionRefusedError" in str(stats["errors"])
