"""components/batch-job：サーバーと同じイメージ・同じ権限で predict を走らせる Job（issue 24）。"""

from __future__ import annotations

from typing import Any

import pytest

from .manifests import CONTAINER, Obj, container, only

pytestmark = pytest.mark.k8s

BATCH_APP = "model-in-image-batch"


@pytest.fixture(scope="module")
def objects(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["batch-job"]


def _job_pod(objects: list[Obj]) -> Obj:
    pod: Obj = only(objects, "Job")["spec"]["template"]
    return pod


def _job_container(objects: list[Obj]) -> Obj:
    found: list[Obj] = [
        c for c in _job_pod(objects)["spec"]["containers"] if c["name"] == CONTAINER
    ]
    assert len(found) == 1
    return found[0]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_job_runs_predict_with_the_servers_image(objects: list[Obj]) -> None:
    """同じイメージ（オーバーレイの images も効く）で、ENTRYPOINT の model-in-image predict。"""
    job = _job_container(objects)
    assert job["image"] == container(objects)["image"]
    assert "command" not in job  # イメージの ENTRYPOINT を使う
    assert job["args"][0] == "predict"
    assert "--output" in job["args"]
    assert all(arg.startswith("/data/") for arg in job["args"][1:] if arg.startswith("/"))


def test_the_job_has_the_servers_security_context(objects: list[Obj]) -> None:
    """コンテナの securityContext はサーバーと同じ。Pod の違いはボリュームに書く fsGroup だけ。"""
    assert _job_container(objects)["securityContext"] == container(objects)["securityContext"]
    server_pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    job_pod = _job_pod(objects)["spec"]
    assert {**job_pod["securityContext"], "fsGroup": None} == {
        **server_pod["securityContext"],
        "fsGroup": None,
    }
    assert job_pod["securityContext"]["fsGroup"] == server_pod["securityContext"]["runAsGroup"]
    assert job_pod["automountServiceAccountToken"] is False
    assert job_pod["restartPolicy"] == "Never"


def test_the_job_reads_and_writes_only_the_mounted_volume(objects: list[Obj]) -> None:
    """ルートは読み取り専用。書けるのは PVC の /data と小さな /tmp だけ。"""
    mounts = {m["mountPath"]: m["name"] for m in _job_container(objects)["volumeMounts"]}
    assert mounts == {"/data": "data", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in _job_pod(objects)["spec"]["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    pvcs = [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claim in pvcs


def test_the_job_is_bounded(objects: list[Obj]) -> None:
    """やり直しの回数と全体の時間に上限がある（止まった Job を残さない）。"""
    spec = only(objects, "Job")["spec"]
    assert 0 < spec["backoffLimit"] <= 6
    assert spec["activeDeadlineSeconds"] > 0
    limits = _job_container(objects)["resources"]["limits"]
    assert {"cpu", "memory"} <= set(limits)


def test_job_pods_are_not_served_and_have_no_network(objects: list[Obj]) -> None:
    """Job の Pod は Service・PDB に選ばれず、自分の NetworkPolicy で出入りともすべて拒否。"""
    labels = _job_pod(objects)["metadata"]["labels"]
    assert labels["app"] == BATCH_APP
    for kind in ("Service", "PodDisruptionBudget"):
        obj = only(objects, kind)
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert not _selects(selector, labels), f"{kind} selects the batch pods"
    policies = [
        p
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and _selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]
    assert len(policies) == 1
    policy = policies[0]["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy.get("ingress", []) == []
    assert policy.get("egress", []) == []
