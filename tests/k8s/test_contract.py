"""マニフェストとコードの約束：プローブのパス、環境変数、UID、ポート、停止手順を実物で確かめる。"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from model_in_image.api.app import ModelServerApp, create_app
from model_in_image.settings import Settings
from support.env import SETTINGS_ENV
from support.grpc_v2 import NOT_SERVING, SERVING, health_status
from support.net import get_status, wait_for
from support.paths import LABEL_FILE, MODEL_FILE
from support.servers import launch

from . import load_client
from .manifests import ROOT, TUTORIAL_IMAGE, Obj, container, env_values, only, pod_spec

pytestmark = pytest.mark.k8s

DOCKERFILE = ROOT / "Dockerfile"
DOCKER_MK = ROOT / "mk" / "docker.mk"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PREDICT_LINE = "POST /predict/label"


def probe_paths(objects: list[Obj]) -> set[str]:
    """3 つのプローブのパス。"""
    ctr = container(objects)
    return {ctr[kind]["httpGet"]["path"] for kind in PROBES}


def served_gets() -> set[str]:
    """ディスパッチャのルート表にある GET のパス。"""
    app = create_app(Settings())
    return {r.path for r in app.dispatcher.router.routes if r.method == "GET"}


def status_of(path: str, *, loaded: bool, draining: bool = False) -> int:
    """状態を与えたアプリ（ライフスパンは実行しない）に GET したステータス。"""
    app: ModelServerApp = create_app(Settings())
    app.state.dataplane = cast(Any, object()) if loaded else None
    app.state.draining = draining
    return TestClient(app).get(path).status_code


# --- プローブのパスは実在するルート ---------------------------------------------


def test_probe_paths_are_dispatched_routes(rendered: dict[str, list[Obj]]) -> None:
    served = served_gets()
    for objects in rendered.values():
        assert probe_paths(objects) <= served


def test_probe_paths_are_fastapi_routes(rendered: dict[str, list[Obj]]) -> None:
    app = create_app(Settings())
    served = {
        route.path
        for route in app.api.routes
        if isinstance(route, APIRoute) and "GET" in (route.methods or set())
    }
    for objects in rendered.values():
        assert probe_paths(objects) <= served


def test_scrape_annotation_points_at_a_real_route(rendered: dict[str, list[Obj]]) -> None:
    served = served_gets()
    for objects in rendered.values():
        annotations = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] in served
        ports = {str(p["containerPort"]) for p in container(objects)["ports"]}
        assert annotations["prometheus.io/port"] in ports


def test_readiness_means_loaded_and_not_draining(rendered: dict[str, list[Obj]]) -> None:
    ready = container(rendered["production"])["readinessProbe"]["httpGet"]["path"]
    assert status_of(ready, loaded=False) == 503
    assert status_of(ready, loaded=True) == 200
    assert status_of(ready, loaded=True, draining=True) == 503


@pytest.mark.parametrize("kind", ["livenessProbe", "startupProbe"])
def test_liveness_only_means_responsive(rendered: dict[str, list[Obj]], kind: str) -> None:
    alive = container(rendered["production"])[kind]["httpGet"]["path"]
    for loaded, draining in ((False, False), (True, True)):
        assert (
            status_of(alive, loaded=loaded, draining=draining) == 200
        )  # 終了処理中に再起動させない


# --- 環境変数は Settings が読むもの --------------------------------------------


def test_env_names_are_settings_fields(rendered: dict[str, list[Obj]]) -> None:
    for objects in rendered.values():
        assert set(env_values(container(objects))) <= SETTINGS_ENV


@pytest.mark.parametrize("overlay", ["minikube", "production"])
def test_settings_accept_the_pod_env(
    rendered: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    env = env_values(container(rendered[overlay]))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.workers == 1
    assert settings.ort_intra_op_threads == 1
    assert settings.host == "0.0.0.0"
    assert settings.port == container(rendered[overlay])["ports"][0]["containerPort"]
    assert settings.shutdown_drain_seconds == float(env["SHUTDOWN_DRAIN_SECONDS"])


# --- イメージ（Dockerfile）との約束 ---------------------------------------------


def dockerfile_final_stage() -> list[str]:
    """Dockerfile の最後のステージの命令（継続行を結合、コメントを除く）。"""
    if not DOCKERFILE.is_file():
        pytest.skip(f"{DOCKERFILE} does not exist yet: cannot compare with the image")
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    starts = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    return lines[starts[-1] :] if starts else lines


def dockerfile_env(stage: list[str]) -> dict[str, str]:
    """最後のステージの ENV（KEY=VALUE 形式。${ARG} は最初の FROM の前の ARG の既定値に展開）。"""
    head = DOCKERFILE.read_text(encoding="utf-8").split("\nFROM ", 1)[0]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", head, flags=re.M))
    env: dict[str, str] = {}
    for line in stage:
        if line.upper().startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line[4:]))
    return {k: re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), v) for k, v in env.items()}


def test_uid_matches_the_dockerfile_user(rendered: dict[str, list[Obj]]) -> None:
    users = [
        ln.split(None, 1)[1] for ln in dockerfile_final_stage() if ln.upper().startswith("USER ")
    ]
    assert users, "the image must switch to a non-root USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER {users[-1]} must be numeric for runAsNonRoot to verify it"
    for objects in rendered.values():
        ctx = pod_spec(objects)["securityContext"]
        assert ctx["runAsUser"] == int(uid)
        if gid:
            assert ctx["runAsGroup"] == int(gid)


def test_model_paths_and_port_match_the_image(rendered: dict[str, list[Obj]]) -> None:
    stage = dockerfile_final_stage()
    image_env = dockerfile_env(stage)
    exposed = {ln.split()[1].split("/")[0] for ln in stage if ln.upper().startswith("EXPOSE ")}
    for objects in rendered.values():
        env = env_values(container(objects))
        # モデルの場所はイメージの ENV だけが決める（マニフェストは上書きしない）
        assert "MODEL_FILEPATH" in image_env
        assert "LABEL_FILEPATH" in image_env
        assert not {"MODEL_FILEPATH", "LABEL_FILEPATH"} & set(env)
        # コンテナのポート（http と grpc）はどれもイメージが EXPOSE する
        assert {str(p["containerPort"]) for p in container(objects)["ports"]} <= exposed


def test_make_image_builds_the_tag_the_local_overlays_run() -> None:
    if not DOCKER_MK.is_file():
        pytest.skip(f"{DOCKER_MK} does not exist yet")
    match = re.search(r"^IMAGE\s*\?=\s*(\S+)", DOCKER_MK.read_text(encoding="utf-8"), re.M)
    assert match, "mk/docker.mk defines no IMAGE ?= default"
    assert match.group(1) == TUTORIAL_IMAGE


# --- Pod の環境変数でサーバーを実際に起動し、kubelet と同じ順で止める ---------------


@pytest.fixture
def pod_server(rendered: dict[str, list[Obj]], tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    """minikube の Pod と同じ環境変数でサーバーを起動する（パスとポートだけ差し替え）。"""
    objects = rendered["minikube"]
    # Pod の環境変数をそのまま使い、モデルのパスと待ち受けだけを差し替える
    env = {**env_values(container(objects)), "HOST": "127.0.0.1"}
    env.update(MODEL_FILEPATH=str(MODEL_FILE), LABEL_FILEPATH=str(LABEL_FILE))
    del env["GRPC_PORT"]  # gRPC も 127.0.0.1 の空きポートで（grpc=True）
    server = launch(tmp_path, env, cwd=tmp_path, grpc=True)
    try:
        yield objects, server.port, server.process, server.log_path, server.grpc_target
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(timeout=10)


def test_pod_env_serves_probes_and_drains_like_kubelet_expects(pod_server: tuple[Any, ...]) -> None:
    objects, port, proc, log, grpc_target = pod_server
    ctr = container(objects)
    startup, ready, alive = (ctr[kind]["httpGet"]["path"] for kind in PROBES)
    budget = ctr["startupProbe"]["periodSeconds"] * ctr["startupProbe"]["failureThreshold"]
    drain = float(env_values(ctr)["SHUTDOWN_DRAIN_SECONDS"])
    pause = ctr["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_spec(objects)["terminationGracePeriodSeconds"]

    # 起動：startup プローブの猶予内に応答し、readiness も通る
    wait_for(lambda: get_status(port, startup) == 200, budget, "startup probe", proc)
    assert get_status(port, ready) == 200
    assert health_status(grpc_target) == SERVING  # 任意の gRPC プローブ（docs/kubernetes.md）
    stats = load_client.run("127.0.0.1", port, 21, 30.0, lambda _: None)
    assert stats["failed"] == 0, stats["errors"]

    # kubelet は preStop の後に SIGTERM を送る：readiness だけが落ち、推論は続く
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: get_status(port, ready) == 503, 2.0, "readiness to fail", proc)
    assert health_status(grpc_target) == NOT_SERVING
    assert get_status(port, alive) == 200
    assert load_client.request_once("127.0.0.1", port, *load_client.SAMPLES[2]) is None

    # ドレインの後に正常終了する（猶予期間 − preStop の内に）
    assert proc.wait(timeout=grace - pause) == 0, log.read_text()
    assert time.monotonic() - stopped_at >= drain - 0.5

    # E2E はアクセスログの行数で Pod ごとの件数を数える：1 リクエスト 1 行であること
    assert log.read_text().count(PREDICT_LINE) == 21 + 1
