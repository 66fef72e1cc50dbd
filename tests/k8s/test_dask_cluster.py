"""components/dask-cluster と examples/dask-cluster：DaskCluster とクライアントの Job（issue 24）。

DaskCluster は CRD（kubernetes.dask.org/v1）なので kubernetes-validate のスキーマが無い：中の
PodSpec（scheduler・worker）と ServiceSpec を Pod・Service に包んで strict で検証し、CRD の
フィールド（operator の形）は手で確かめる。ほかの組み込みのオブジェクトはそのまま検証する。
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from .manifests import K8S_DIR, ROOT, Obj, container, only, render, selects
from .test_schemas import VERSIONS, validate_all

pytestmark = pytest.mark.k8s

EXAMPLE = K8S_DIR / "examples" / "dask-cluster"
CLUSTER = "model-in-image"
CLIENT_APP = "model-in-image-dask-client"
# operator が Pod に付けるラベル（dask-kubernetes の operator の形）
OPERATOR_LABELS = {"dask.org/cluster-name": CLUSTER}
SCHEDULER_LABELS = {**OPERATOR_LABELS, "dask.org/component": "scheduler"}
WORKER_LABELS = {**OPERATOR_LABELS, "dask.org/component": "worker"}


@pytest.fixture(scope="module")
def objects(kubectl: str) -> list[Obj]:
    return render(kubectl, EXAMPLE)


def _cluster(objects: list[Obj]) -> Obj:
    cluster = only(objects, "DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert cluster["metadata"]["name"] == CLUSTER
    return cluster


def _pod(spec: Obj, name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _venv_bin() -> str:
    """イメージの venv の bin（Dockerfile の ENTRYPOINT の置き場所）。"""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r'^ENTRYPOINT \["(/[^"]+)/model-in-image"\]', text, re.M)
    assert match, "ENTRYPOINT not found in Dockerfile"
    return match.group(1)


@pytest.mark.parametrize("version", [VERSIONS[0], VERSIONS[-1]])
def test_the_built_in_parts_are_valid_strictly(objects: list[Obj], version: str) -> None:
    """組み込みの kind はそのまま、DaskCluster の PodSpec・ServiceSpec は Pod・Service に包んで。"""
    builtin = [o for o in objects if o["kind"] != "DaskCluster"]
    spec = _cluster(objects)["spec"]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{CLUSTER}-scheduler"},
        "spec": spec["scheduler"]["service"],
    }
    wrapped = [
        _pod(spec["scheduler"]["spec"], "scheduler"),
        _pod(spec["worker"]["spec"], "worker"),
        service,
    ]
    assert validate_all([*builtin, *wrapped], version) == []


def test_the_crd_fields_have_the_operators_shape(objects: list[Obj]) -> None:
    """spec は worker（replicas・spec）と scheduler（spec・service）だけ。"""
    spec = _cluster(objects)["spec"]
    assert set(spec) == {"worker", "scheduler"}
    assert set(spec["worker"]) == {"replicas", "spec"}
    assert isinstance(spec["worker"]["replicas"], int)
    assert spec["worker"]["replicas"] >= 1
    assert set(spec["scheduler"]) == {"spec", "service"}


def test_scheduler_and_workers_run_dask_from_the_images_venv(objects: list[Obj]) -> None:
    """同じイメージ（images も効く）の venv の dask：scheduler と worker（1 スレッド）。"""
    spec = _cluster(objects)["spec"]
    image = container(objects)["image"]
    dask = f"{_venv_bin()}/dask"
    (scheduler,) = spec["scheduler"]["spec"]["containers"]
    (worker,) = spec["worker"]["spec"]["containers"]
    for ctr, command in ((scheduler, "scheduler"), (worker, "worker")):
        assert ctr["image"] == image
        assert ctr["command"] == [dask]
        assert ctr["args"][0] == command
    args = worker["args"]
    assert args[args.index("--nthreads") + 1] == "1"
    assert {"name": "ORT_INTRA_OP_THREADS", "value": "1"} in worker["env"]
    assert worker["resources"]["limits"]["cpu"] == "1"


def test_the_dask_extra_provides_the_commands() -> None:
    """イメージに要る dask extra（dask[dataframe] と distributed）が `dask` のコマンドを入れる。"""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[\[<>=]", req)[0] for req in extras["dask"]}
    assert names == {"dask", "distributed"}
    pytest.importorskip("distributed")
    import distributed.cli.dask_scheduler
    import distributed.cli.dask_worker

    assert distributed.cli.dask_scheduler.main
    assert distributed.cli.dask_worker.main


def test_dask_pods_have_the_servers_security_context(objects: list[Obj]) -> None:
    server_ctx = container(objects)["securityContext"]
    server_pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    spec = _cluster(objects)["spec"]
    client = only(objects, "Job")["spec"]["template"]["spec"]
    for pod in (spec["scheduler"]["spec"], spec["worker"]["spec"], client):
        for ctr in pod["containers"]:
            assert ctr["securityContext"] == server_ctx
            assert "/tmp" in {m["mountPath"] for m in ctr["volumeMounts"]}
        ctx = {**pod["securityContext"], "fsGroup": None}
        assert ctx == {**server_pod["securityContext"], "fsGroup": None}
        assert pod["automountServiceAccountToken"] is False


def test_the_scheduler_service_reaches_the_scheduler_ports(objects: list[Obj]) -> None:
    spec = _cluster(objects)["spec"]
    service = spec["scheduler"]["service"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == SCHEDULER_LABELS
    (scheduler,) = spec["scheduler"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports["tcp-comm"] == 8786
    assert {p["targetPort"] for p in service["ports"]} <= set(ports)
    assert scheduler["readinessProbe"]["httpGet"]["port"] in ports


def test_the_client_job_scores_the_shared_volume_through_the_scheduler(
    objects: list[Obj],
) -> None:
    """クライアントの Job：predict --engine dask --scheduler（operator の Service）、同じ /data。"""
    job = only(objects, "Job")["spec"]["template"]["spec"]
    (ctr,) = job["containers"]
    args = ctr["args"]
    assert args[0] == "predict"
    assert args[args.index("--engine") + 1] == "dask"
    assert args[args.index("--scheduler") + 1] == f"tcp://{CLUSTER}-scheduler:8786"
    spec = _cluster(objects)["spec"]
    claims = set()
    for pod in (job, spec["worker"]["spec"]):
        volumes = {v["name"]: v for v in pod["volumes"]}
        (ctr_,) = pod["containers"]
        (data,) = [m for m in ctr_["volumeMounts"] if m["mountPath"] == "/data"]
        claims.add(volumes[data["name"]]["persistentVolumeClaim"]["claimName"])
    (pvc,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claims == {pvc["metadata"]["name"]}
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # 別のノードのワーカーとクライアント


def _policies_for(objects: list[Obj], labels: dict[str, str]) -> list[Any]:
    return [
        p["spec"]
        for p in objects
        if p["kind"] == "NetworkPolicy" and selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]


def test_dask_pods_talk_only_to_each_other_and_the_client(objects: list[Obj]) -> None:
    """スケジューラー・ワーカーの出入りは Dask の Pod・クライアント・DNS だけ。"""
    for labels in (SCHEDULER_LABELS, WORKER_LABELS):
        (policy,) = _policies_for(objects, labels)
        assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
        sources = [peer["podSelector"]["matchLabels"] for peer in policy["ingress"][0]["from"]]
        assert sources == [OPERATOR_LABELS, {"app": CLIENT_APP}]
        peers = [peer for rule in policy["egress"] for peer in rule["to"]]
        assert all("ipBlock" not in peer for peer in peers)  # 外へ出ない
    (client,) = _policies_for(objects, {"app": CLIENT_APP})
    assert client["ingress"] == []
    to_scheduler = client["egress"][0]
    assert to_scheduler["to"][0]["podSelector"]["matchLabels"] == SCHEDULER_LABELS
    assert to_scheduler["ports"] == [{"protocol": "TCP", "port": 8786}]
    server = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not _policies_for(objects, server) or all(
        not selects(p["podSelector"]["matchLabels"], OPERATOR_LABELS)
        for p in _policies_for(objects, server)
    )


def test_the_example_is_not_an_overlay() -> None:
    """CRD の無いクラスター・スキーマの検証（overlays/ の全部）に入らないよう examples/ に置く。"""
    assert Path(EXAMPLE, "kustomization.yaml").is_file()
    assert not (K8S_DIR / "overlays" / "dask-cluster").exists()
