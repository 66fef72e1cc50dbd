"""実クラスタでの E2E（opt-in：KUBECONFIG と MII_E2E_K8S=1。make test-e2e-k8s）。

minikube オーバーレイをそのまま適用し、3 品種の推論、複数 Pod への振り分け、スケール、
負荷をかけたままのイメージ更新（失敗 0 件）を確かめ、最後に名前空間を消す。
イメージの読み込みは minikube image load / kind load（MII_E2E_LOADER で上書き可）。
"""

from __future__ import annotations

import http.client
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from . import load_client
from .cluster import (
    MIN_SERVER_VERSION,
    Kube,
    detect_loader,
    load_image,
    load_pod,
    load_stats,
    local_image_exists,
    pod_phase,
    port_forward,
    skip_reason,
    start_load,
    wait_until,
)
from .manifests import APP, CONTAINER, NAMESPACE, OVERLAYS_DIR, container, find_kubectl, render

pytestmark = [pytest.mark.e2e_k8s, pytest.mark.timeout(900)]

OVERLAY = OVERLAYS_DIR / "minikube"
ROLLOUT_TIMEOUT_S = 300
SCALED_REPLICAS = 3
SPREAD_REQUESTS = 300
ROLLING_LOAD_S = 600  # 上限。結果はロールアウト後に途中経過として読む
MIN_REQUESTS_DURING_ROLLOUT = 50


@pytest.fixture(scope="module")
def kube() -> Kube:
    """到達できるクラスタの kubectl（条件が揃わなければ理由を付けてスキップ）。"""
    kubectl = find_kubectl()
    reason = skip_reason(kubectl)
    if reason:
        pytest.skip(reason)
    assert kubectl is not None
    k = Kube(kubectl)
    version = k.server_version()
    if isinstance(version, str):
        pytest.skip(f"Kubernetes API not reachable with KUBECONFIG: {version}")
    if version < MIN_SERVER_VERSION:
        pytest.skip(f"cluster is {version}; the manifests need >= {MIN_SERVER_VERSION}")
    return k


@pytest.fixture(scope="module")
def manifests(kube: Kube) -> list[dict[str, Any]]:
    """適用する minikube オーバーレイの描画結果（イメージ名をここから取る）。"""
    return render(kube.kubectl, OVERLAY)


@pytest.fixture(scope="module")
def deployed(kube: Kube, manifests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """イメージを読み込み、オーバーレイを適用し、終わったら名前空間ごと消す。"""
    ctr = container(manifests)
    image = ctr["image"]
    context = kube.current_context()
    loader = detect_loader(context)
    if loader != "none" and not local_image_exists(image):
        pytest.fail(f"image {image} not found in the local Docker: build it first (make image)")
    if kube.namespace_exists():
        pytest.fail(
            f"namespace {NAMESPACE} already exists on {context} (a tutorial deployment?); "
            "this test deletes it at the end: remove it first (make undeploy)"
        )
    try:
        load_image(loader, context, image)
        kube.run("apply", "-k", str(OVERLAY), namespaced=False, timeout=120)
        kube.rollout(ROLLOUT_TIMEOUT_S)
        yield {"image": image, "pull_policy": ctr["imagePullPolicy"], "loader": loader}
    finally:
        kube.run(
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=180s",
            namespaced=False,
            check=False,
            timeout=240,
        )


def run_load_to_completion(kube: Kube, env: dict[str, Any], total: int) -> dict[str, Any]:
    """件数指定の負荷 Pod を最後まで動かし、最終結果を返す。"""
    name = f"mii-e2e-spread-{secrets.token_hex(3)}"
    pod = load_pod(name, env["image"], env["pull_policy"], total, 240)
    start_load(kube, pod)
    done = ("Succeeded", "Failed")
    wait_until(lambda: pod_phase(kube, name) in done, 300, f"{name} to finish", kube)
    stats = load_stats(kube, name)
    kube.run("delete", "pod", name, "--wait=false", check=False)
    assert stats is not None
    assert stats["done"]
    return stats


def test_predicts_three_species_through_port_forward(kube: Kube, deployed: dict[str, Any]) -> None:
    with port_forward(kube, f"svc/{APP}", 8000) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/readyz")
        assert conn.getresponse().status == 200
        conn.close()
        for features, expected in load_client.SAMPLES:
            assert load_client.request_once("127.0.0.1", port, features, expected) is None


def test_requests_reach_several_pods(kube: Kube, deployed: dict[str, Any]) -> None:
    pods = [p["metadata"]["name"] for p in kube.app_pods()]
    assert len(pods) >= 2, kube.diagnostics()
    before = {pod: kube.predict_lines(pod) for pod in pods}
    stats = run_load_to_completion(kube, deployed, SPREAD_REQUESTS)
    assert (stats["ok"], stats["failed"]) == (SPREAD_REQUESTS, 0), stats["errors"]
    served = {pod: kube.predict_lines(pod) - before[pod] for pod in pods}
    assert sum(served.values()) == SPREAD_REQUESTS, served
    assert sum(1 for n in served.values() if n > 0) >= 2, served


def test_scales_out(kube: Kube, deployed: dict[str, Any]) -> None:
    kube.run("scale", f"deployment/{APP}", f"--replicas={SCALED_REPLICAS}")
    kube.rollout(ROLLOUT_TIMEOUT_S)
    ready = kube.get("deployment", APP)["status"].get("readyReplicas")
    assert ready == SCALED_REPLICAS, kube.diagnostics()
    wait_until(
        lambda: kube.ready_endpoints() == SCALED_REPLICAS, 60, "endpoints of every pod", kube
    )


def test_rolling_update_under_load_fails_no_request(kube: Kube, deployed: dict[str, Any]) -> None:
    image = deployed["image"]
    if not local_image_exists(image):
        pytest.skip(f"needs {image} in the local Docker to tag a new version for the rollout")
    new_image = f"{image.rsplit(':', 1)[0]}:e2e-{secrets.token_hex(4)}"
    subprocess.run(["docker", "tag", image, new_image], check=True, timeout=60)
    name = f"mii-e2e-rolling-{secrets.token_hex(3)}"
    try:
        load_image(deployed["loader"], kube.current_context(), new_image)
        old_pods = {p["metadata"]["name"] for p in kube.app_pods()}
        start_load(kube, load_pod(name, image, deployed["pull_policy"], 0, ROLLING_LOAD_S))

        kube.run("set", "image", f"deployment/{APP}", f"{CONTAINER}={new_image}")
        kube.rollout(ROLLOUT_TIMEOUT_S)
        # 古い Pod が preStop・ドレインを経て消えるまで負荷をかけ続ける
        wait_until(
            lambda: not old_pods & {p["metadata"]["name"] for p in kube.app_pods(terminating=True)},
            150,
            "old pods to terminate",
            kube,
        )
        time.sleep(2)
        stats = load_stats(kube, name)
        assert stats is not None
        assert not stats["done"], "the load ended before the rollout finished"
        assert stats["failed"] == 0, f"{stats['errors']}\n{kube.diagnostics()}"
        assert stats["ok"] >= MIN_REQUESTS_DURING_ROLLOUT, stats

        pods = kube.app_pods()
        assert len(pods) == kube.get("deployment", APP)["spec"]["replicas"]
        assert {p["spec"]["containers"][0]["image"] for p in pods} == {new_image}
    finally:
        kube.run("delete", "pod", name, "--wait=false", "--ignore-not-found", check=False)
        subprocess.run(["docker", "rmi", new_image], capture_output=True, timeout=60, check=False)
