"""描画結果に対するポリシー：資源、プローブ、ローリング更新、停止手順、セキュリティ、HPA。"""

from __future__ import annotations

import math

import pytest

from .manifests import (
    APP,
    NAMESPACE,
    TUTORIAL_IMAGE,
    Obj,
    container,
    env_values,
    network_policy,
    only,
    overlay_names,
    parse_cpu,
    parse_memory,
    pod_labels,
    pod_spec,
    selects,
    split_image,
)

pytestmark = pytest.mark.k8s

OVERLAYS = overlay_names()
HPA_OVERLAYS = ["minikube-hpa", "production"]
LOCAL_OVERLAYS = ["minikube", "minikube-hpa"]
UID = 10001
CPU_CORES = 0.5
MEMORY_BYTES = 300 * 2**20
SERVICE_PORT = 8000
GRPC_PORT = 8081
NODE_PORTS = {"http": 30080, "grpc": 30081}
SHUTDOWN_MARGIN_S = 10
SHUTDOWN_EXIT_MARGIN_S = 2  # 待ち受けを閉じる猶予・ライフスパンの終了・プロセスの終了
MIN_STARTUP_BUDGET_S = 30
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest, rendered: dict[str, list[Obj]]) -> list[Obj]:
    """各オーバーレイの描画結果。"""
    result: list[Obj] = rendered[request.param]
    return result


# --- Namespace ---------------------------------------------------------------


def test_namespace_enforces_restricted_pod_security(objects: list[Obj]) -> None:
    ns = only(objects, "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- Deployment: 資源と 1 プロセス ---------------------------------------------


def test_deployment_selects_its_own_pods(objects: list[Obj]) -> None:
    deployment = only(objects, "Deployment")
    assert deployment["metadata"]["name"] == APP
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": APP}
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(objects))


def test_requests_equal_limits_as_specified(objects: list[Obj]) -> None:
    resources = container(objects)["resources"]
    assert resources["requests"] == resources["limits"]
    assert parse_cpu(resources["limits"]["cpu"]) == CPU_CORES
    assert parse_memory(resources["limits"]["memory"]) == MEMORY_BYTES


def test_one_server_process_and_threads_sized_to_cpu_limit(objects: list[Obj]) -> None:
    ctr = container(objects)
    env = env_values(ctr)
    assert env["WORKERS"] == "1"
    # CPU 上限を切り上げたスレッド数（500m -> 1。上限を変えればスレッド数も追従する）
    limit = parse_cpu(ctr["resources"]["limits"]["cpu"])
    assert int(env["ORT_INTRA_OP_THREADS"]) == math.ceil(limit) == 1


def test_server_listens_on_all_interfaces_at_the_container_port(objects: list[Obj]) -> None:
    ctr = container(objects)
    env = env_values(ctr)
    ports = {p["name"]: p for p in ctr["ports"]}
    assert ports["http"]["containerPort"] == SERVICE_PORT
    assert ports["http"].get("protocol", "TCP") == "TCP"
    assert env["HOST"] == "0.0.0.0"
    assert int(env["PORT"]) == ports["http"]["containerPort"]
    assert ports["grpc"]["containerPort"] == GRPC_PORT
    assert ports["grpc"].get("protocol", "TCP") == "TCP"
    assert int(env["GRPC_PORT"]) == ports["grpc"]["containerPort"]


def test_model_files_come_from_the_image(objects: list[Obj]) -> None:
    env = env_values(container(objects))
    # モデルの場所はイメージの ENV が決める：マニフェストが Iris のファイルを指すと、持ち込み
    # モデルのイメージが「model file not found」で起動しない
    assert "MODEL_FILEPATH" not in env
    assert "LABEL_FILEPATH" not in env
    assert env["LOG_LEVEL"] in {"INFO", "WARNING"}  # シードの DEBUG は本番向きでない
    assert env["LOG_FORMAT"] in {"TEXT", "JSON"}


# --- プローブ -------------------------------------------------------------------


def test_probes_use_the_named_container_port(objects: list[Obj]) -> None:
    ctr = container(objects)
    names = {p["name"] for p in ctr["ports"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = ctr[kind]["httpGet"]
        assert probe["port"] in names, kind
        assert isinstance(probe["port"], str), f"{kind} must name the port, not repeat the number"
        assert probe.get("scheme", "HTTP") == "HTTP"


def test_readiness_and_liveness_are_different_endpoints(objects: list[Obj]) -> None:
    ctr = container(objects)
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert ctr["startupProbe"]["httpGet"]["path"] == "/livez"


def test_startup_probe_gives_the_model_time_to_load(objects: list[Obj]) -> None:
    probe = container(objects)["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= MIN_STARTUP_BUDGET_S


def test_liveness_tolerates_a_slow_moment(objects: list[Obj]) -> None:
    probe = container(objects)["livenessProbe"]
    assert probe.get("failureThreshold", 3) >= 3
    assert probe.get("timeoutSeconds", 1) >= 2


# --- ローリング更新と停止手順 ---------------------------------------------------


def test_rolling_update_never_drops_below_capacity(objects: list[Obj]) -> None:
    strategy = only(objects, "Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] in (0, "0%")
    assert strategy["rollingUpdate"]["maxSurge"] not in (0, "0%")


def test_prestop_uses_native_sleep(objects: list[Obj]) -> None:
    pre_stop = container(objects)["lifecycle"]["preStop"]
    assert set(pre_stop) == {"sleep"}, "no exec: the image guarantees neither a shell nor sleep"
    assert pre_stop["sleep"]["seconds"] >= 3


def test_grace_period_covers_prestop_drain_and_in_flight(objects: list[Obj]) -> None:
    ctr = container(objects)
    pause = ctr["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(env_values(ctr)["SHUTDOWN_DRAIN_SECONDS"])
    grace = pod_spec(objects)["terminationGracePeriodSeconds"]
    assert drain > 0
    assert grace >= pause + drain + SHUTDOWN_MARGIN_S


def test_grace_period_covers_the_worst_case_shutdown(objects: list[Obj]) -> None:
    """preStop + ドレイン + 処理中の HTTP（最長 GRACEFUL_TIMEOUT_SECONDS）+ gRPC の停止（同じ）
    が SIGKILL の前に終わる（docs/kubernetes.md「Service の裏でリクエストを失わない」）。"""
    ctr = container(objects)
    env = env_values(ctr)
    pause = ctr["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(env["SHUTDOWN_DRAIN_SECONDS"])
    graceful = float(env["GRACEFUL_TIMEOUT_SECONDS"])
    grace = pod_spec(objects)["terminationGracePeriodSeconds"]
    assert grace >= pause + drain + 2 * graceful + SHUTDOWN_EXIT_MARGIN_S


# --- セキュリティ ---------------------------------------------------------------


def test_pod_runs_as_the_image_user_with_runtime_default_seccomp(objects: list[Obj]) -> None:
    ctx = pod_spec(objects)["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == UID
    assert ctx["runAsGroup"] == UID
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


def test_container_is_locked_down(objects: list[Obj]) -> None:
    ctx = container(objects)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx.get("privileged", False) is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx.get("runAsUser", UID) == UID
    assert ctx.get("runAsNonRoot", True) is True


def test_tmp_is_a_writable_empty_dir(objects: list[Obj]) -> None:
    spec = pod_spec(objects)
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_no_service_account_token_is_mounted(objects: list[Obj]) -> None:
    spec = pod_spec(objects)
    account = only(objects, "ServiceAccount")
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    assert spec.get("enableServiceLinks") is False


def test_pod_meets_restricted_pod_security_standard(objects: list[Obj]) -> None:
    spec = pod_spec(objects)
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(flag, False), flag
    for volume in spec.get("volumes", []):
        assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
    for ctr in spec["containers"] + spec.get("initContainers", []):
        assert all("hostPort" not in p for p in ctr.get("ports", []))
        assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
        assert set(ctr["securityContext"]["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}


def test_pods_spread_across_nodes(objects: list[Obj]) -> None:
    constraints = {c["topologyKey"]: c for c in pod_spec(objects)["topologySpreadConstraints"]}
    by_node = constraints["kubernetes.io/hostname"]
    assert by_node["maxSkew"] == 1
    assert selects(by_node["labelSelector"]["matchLabels"], pod_labels(objects))


# --- Service と PDB ------------------------------------------------------------


def test_service_selects_the_pods_and_targets_the_named_port(objects: list[Obj]) -> None:
    service = only(objects, "Service")
    assert service["metadata"]["name"] == APP
    assert selects(service["spec"]["selector"], pod_labels(objects))
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {name: p["port"] for name, p in ports.items()} == {
        "http": SERVICE_PORT,
        "grpc": GRPC_PORT,
    }
    # Service のポートは同じ名前のコンテナポートを名前で指す
    assert {name: p["targetPort"] for name, p in ports.items()} == {"http": "http", "grpc": "grpc"}
    assert {p["name"] for p in container(objects)["ports"]} == set(ports)
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"


def test_disruption_budget_covers_the_pods_and_allows_drains(objects: list[Obj]) -> None:
    pdb = only(objects, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(objects))
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]


# --- NetworkPolicy：外へは出ない、入れるのは提供ポートだけ --------------------------


def port_set(ports: list[Obj]) -> set[tuple[str | int, str]]:
    """（ポート名か番号, プロトコル）の集合。"""
    return {(p["port"] if "port" in p else p["name"], p.get("protocol", "TCP")) for p in ports}


def ingress_ports(objects: list[Obj]) -> set[tuple[str | int, str]]:
    """NetworkPolicy の Ingress ルールが開けるポート全部。"""
    rules = network_policy(objects)["spec"]["ingress"]
    return {port for rule in rules for port in port_set(rule["ports"])}


def container_named_ports(objects: list[Obj]) -> set[tuple[str | int, str]]:
    """推論コンテナのポート（名前, プロトコル）。"""
    return {(p["name"], p.get("protocol", "TCP")) for p in container(objects)["ports"]}


def namespaces_of(rule: Obj) -> set[str]:
    """ルールの送信元が名前で選ぶ名前空間。"""
    return {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer
    }


def test_network_policy_isolates_the_model_pods_both_ways(objects: list[Obj]) -> None:
    assert set(network_policy(objects)["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_base_denies_all_egress(rendered_base: list[Obj]) -> None:
    spec = network_policy(rendered_base)["spec"]
    assert "Egress" in spec["policyTypes"]
    assert spec.get("egress", []) == []


def test_overlays_open_no_egress(objects: list[Obj]) -> None:
    """外向きを開けるのは components/egress-telemetry だけ（どのオーバーレイもまだ使わない）。"""
    spec = network_policy(objects)["spec"]
    assert "Egress" in spec["policyTypes"]
    assert spec.get("egress", []) == []


def test_every_ingress_rule_names_its_ports(objects: list[Obj]) -> None:
    for rule in network_policy(objects)["spec"]["ingress"]:
        assert rule.get("ports"), "an ingress rule without ports opens every port"
        for port in rule["ports"]:
            assert isinstance(port["port"], str), "name the container port, not its number"
            assert "endPort" not in port


def test_ingress_ports_are_the_containers_named_ports(objects: list[Obj]) -> None:
    assert ingress_ports(objects) == container_named_ports(objects)


def test_service_targets_only_ports_the_policy_opens(objects: list[Obj]) -> None:
    opened = {name for name, _ in ingress_ports(objects)}
    targets = {p["targetPort"] for p in only(objects, "Service")["spec"]["ports"]}
    assert targets <= opened


def test_same_namespace_reaches_every_serving_port(objects: list[Obj]) -> None:
    first = network_policy(objects)["spec"]["ingress"][0]
    assert {"podSelector": {}} in first["from"]
    assert port_set(first["ports"]) == container_named_ports(objects)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_local_overlays_accept_any_source(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    """NodePort で手元から呼ぶチュートリアルだけが送信元を問わない（ポートは同じく名前つき）。"""
    rules = network_policy(rendered[overlay])["spec"]["ingress"]
    open_rules = [rule for rule in rules if not rule.get("from")]
    assert bool(open_rules) is (overlay in LOCAL_OVERLAYS)
    for rule in rules:
        assert all("ipBlock" not in peer for peer in rule.get("from", []))


def test_production_admits_the_ingress_controller_and_prometheus_metrics_only(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["production"]
    rules = network_policy(objects)["spec"]["ingress"]
    serving, *others = rules
    assert "ingress-nginx" in namespaces_of(serving)
    (scrape,) = [rule for rule in others if "monitoring" in namespaces_of(rule)]
    annotations = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    metrics = [
        p["name"]
        for p in container(objects)["ports"]
        if str(p["containerPort"]) == annotations["prometheus.io/port"]
    ]
    assert port_set(scrape["ports"]) == {(name, "TCP") for name in metrics}
    for peer in scrape["from"]:
        assert peer["podSelector"]["matchLabels"], "only Prometheus, not the whole namespace"


# --- オーバーレイごと ------------------------------------------------------------


def test_base_keeps_the_specified_replica_count(rendered_base: list[Obj]) -> None:
    assert only(rendered_base, "Deployment")["spec"]["replicas"] == 4


@pytest.mark.parametrize("overlay", LOCAL_OVERLAYS)
def test_local_overlays_run_the_loaded_tutorial_image(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    ctr = container(rendered[overlay])
    assert ctr["image"] == TUTORIAL_IMAGE
    assert ctr["imagePullPolicy"] in {"Never", "IfNotPresent"}


@pytest.mark.parametrize("overlay", LOCAL_OVERLAYS)
def test_local_overlays_expose_node_ports_30080_and_30081(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    service = only(rendered[overlay], "Service")
    assert service["spec"]["type"] == "NodePort"
    assert {p["name"]: p["nodePort"] for p in service["spec"]["ports"]} == NODE_PORTS


def test_production_uses_a_registry_image_by_tag_or_digest(
    rendered: dict[str, list[Obj]],
) -> None:
    ctr = container(rendered["production"])
    name, tag, digest = split_image(ctr["image"])
    host = name.split("/")[0]
    assert "/" in name, f"{ctr['image']} has no registry"
    assert "." in host or ":" in host, f"{ctr['image']} has no registry host"
    assert digest or (tag and tag != "latest"), ctr["image"]
    assert ctr["imagePullPolicy"] == "Always"  # ノードのキャッシュより先にレジストリで確かめる
    assert only(rendered["production"], "Service")["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("overlay", HPA_OVERLAYS)
def test_hpa_follows_the_specification(rendered: dict[str, list[Obj]], overlay: str) -> None:
    hpa = only(rendered[overlay], "HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 10)
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 50}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


@pytest.mark.parametrize("overlay", HPA_OVERLAYS)
def test_hpa_targets_the_deployment(rendered: dict[str, list[Obj]], overlay: str) -> None:
    deployment = only(rendered[overlay], "Deployment")
    target = only(rendered[overlay], "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replica_count_has_exactly_one_owner(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """HPA があれば Deployment に replicas を書かない（apply のたびに HPA と取り合わない）。"""
    has_hpa = "HorizontalPodAutoscaler" in {o["kind"] for o in rendered[overlay]}
    spec = only(rendered[overlay], "Deployment")["spec"]
    assert ("replicas" in spec) is not has_hpa
    if not has_hpa:
        assert spec["replicas"] >= 2, "one pod cannot be updated or drained without a gap"
