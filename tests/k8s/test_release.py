"""make release：push したイメージのレジストリのダイジェストで production を固定する。

書き換え（scripts/k8s_set_image.py、`kustomize edit set image` と同じ結果）はオフラインで確かめ、
make release 全体は 127.0.0.1 のローカルレジストリ（Debian の docker-registry）に実際に push して、
書き込まれたダイジェストがレジストリの返すものと同じで、そのマニフェストが元のイメージを指すことを見る。
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from support.net import free_port

from .cluster import stop
from .conftest import REQUIRE_DOCKER, unavailable
from .manifests import K8S_DIR, ROOT, TUTORIAL_IMAGE, Obj, container, render, split_image

pytestmark = pytest.mark.k8s

SCRIPT = ROOT / "scripts" / "k8s_set_image.py"
IMAGE_NAME = "model-in-image-pattern"
DIGEST = "sha256:" + "0123456789abcdef" * 4
NEW_NAME = "registry.example.com/team/model-in-image"
IMAGE = os.environ.get("MII_IMAGE", TUTORIAL_IMAGE)
REGISTRY_START_S = 20
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    """scripts/k8s_set_image.py をモジュールとして読み込む。"""
    spec = importlib.util.spec_from_file_location("k8s_set_image", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """k8s/ の写し（相対パスの ../../base がそのまま解決する）。"""
    shutil.copytree(K8S_DIR, tmp_path / "k8s")
    return tmp_path / "k8s"


def set_image(overlay: Path, assignment: str) -> subprocess.CompletedProcess[str]:
    """スクリプトをコマンドとして実行する。"""
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(overlay), assignment],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def images_of(overlay: Path) -> list[Obj]:
    """kustomization.yaml の images。"""
    data = yaml.safe_load((overlay / "kustomization.yaml").read_text(encoding="utf-8"))
    images: list[Obj] = data["images"]
    return images


# --- 書き換え（オフライン） -------------------------------------------------------


def test_pins_production_by_digest_like_kustomize_edit(kubectl: str, tree: Path) -> None:
    overlay = tree / "overlays" / "production"
    before = (overlay / "kustomization.yaml").read_text(encoding="utf-8").splitlines()
    result = set_image(overlay, f"{IMAGE_NAME}={NEW_NAME}@{DIGEST}")
    assert result.returncode == 0, result.stderr
    assert images_of(overlay) == [{"name": IMAGE_NAME, "newName": NEW_NAME, "digest": DIGEST}]
    after = (overlay / "kustomization.yaml").read_text(encoding="utf-8").splitlines()
    changed = {ln.strip().split(":")[0] for ln in set(before) ^ set(after)}
    assert changed == {"newName", "newTag", "digest"}, "comments and other keys stay as they were"
    assert len(after) == len(before)
    image = container(render(kubectl, overlay))["image"]
    assert image == f"{NEW_NAME}@{DIGEST}"
    assert split_image(image) == (NEW_NAME, None, DIGEST)


def test_is_idempotent(tree: Path) -> None:
    overlay = tree / "overlays" / "production"
    assert set_image(overlay, f"{IMAGE_NAME}={NEW_NAME}@{DIGEST}").returncode == 0
    once = (overlay / "kustomization.yaml").read_text(encoding="utf-8")
    assert set_image(overlay, f"{IMAGE_NAME}={NEW_NAME}@{DIGEST}").returncode == 0
    assert (overlay / "kustomization.yaml").read_text(encoding="utf-8") == once


def test_adds_an_image_the_overlay_does_not_list_yet(tree: Path) -> None:
    overlay = tree / "overlays" / "minikube"
    assert set_image(overlay, f"sidecar={NEW_NAME}@{DIGEST}").returncode == 0
    assert images_of(overlay) == [
        {"name": IMAGE_NAME, "newTag": "v1.0"},
        {"name": "sidecar", "newName": NEW_NAME, "digest": DIGEST},
    ]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (f"{IMAGE_NAME}={NEW_NAME}@sha256:abc", "64 lowercase hex"),
        (f"{IMAGE_NAME}={NEW_NAME}:1.0@{DIGEST}", "without a tag"),
        (f"{IMAGE_NAME}=model-in-image@{DIGEST}", "without a tag"),
        (f"={NEW_NAME}@{DIGEST}", "expected NAME="),
        (f"{IMAGE_NAME}={NEW_NAME}", "expected NAME="),
        (IMAGE_NAME, "expected NAME="),
    ],
)
def test_refuses_bad_input_with_one_clear_line(tree: Path, assignment: str, message: str) -> None:
    overlay = tree / "overlays" / "production"
    original = (overlay / "kustomization.yaml").read_text(encoding="utf-8")
    result = set_image(overlay, assignment)
    assert result.returncode == 2
    assert result.stderr.startswith("k8s_set_image: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert (overlay / "kustomization.yaml").read_text(encoding="utf-8") == original


def test_refuses_a_directory_without_kustomization(tmp_path: Path) -> None:
    result = set_image(tmp_path, f"{IMAGE_NAME}={NEW_NAME}@{DIGEST}")
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_picks_the_digest_of_the_pushed_repository(tool: ModuleType) -> None:
    digests = [f"other.example/x@{DIGEST}", f"127.0.0.1:5000/mii@{DIGEST}"]
    assert tool.pick_repo_digest("127.0.0.1:5000/mii:1.0", digests) == digests[1]
    with pytest.raises(tool.UsageError, match="push it first"):
        tool.pick_repo_digest("127.0.0.1:5000/mii:1.0", digests[:1])
    with pytest.raises(tool.UsageError, match="REGISTRY/REPOSITORY:TAG"):
        tool.pick_repo_digest("127.0.0.1:5000/mii", digests)


# --- make release をローカルレジストリで -----------------------------------------


def docker_ok(*args: str) -> bool:
    """docker のコマンドが成功するか（時間制限つき）。"""
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def registry_request(
    port: int, path: str, method: str = "GET"
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """ローカルレジストリの API（127.0.0.1 だけ）：ステータス、ヘッダ、本文。"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Accept": MANIFEST_TYPES})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[int]:
    """127.0.0.1 の空きポートで docker-registry を起動し、ポート番号を渡す（最後に止める）。"""
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("docker-registry not found (apt-get install docker-registry)", REQUIRE_DOCKER)
    if shutil.which("docker") is None or not docker_ok("info"):
        unavailable("no Docker engine answers `docker info`", REQUIRE_DOCKER)
    if not docker_ok("image", "inspect", IMAGE):
        unavailable(f"image {IMAGE} not found: build it with `make image`", REQUIRE_DOCKER)
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        ),
        encoding="utf-8",
    )
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + REGISTRY_START_S
        while True:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            try:
                if registry_request(port, "/v2/")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "docker-registry did not answer /v2/"
            time.sleep(0.2)
        yield port
    finally:
        stop(proc)
        log.close()


@pytest.mark.image
@pytest.mark.timeout(600)
def test_make_release_pushes_and_pins_the_registry_digest(
    kubectl: str, tree: Path, registry: int
) -> None:
    overlay = tree / "overlays" / "production"
    repository, tag = "mii-release-test", f"t{uuid.uuid4().hex[:10]}"
    ref = f"127.0.0.1:{registry}/{repository}:{tag}"
    make_vars = [
        f"REGISTRY=127.0.0.1:{registry}",
        f"RELEASE_REPOSITORY={repository}",
        f"RELEASE_TAG={tag}",
        f"RELEASE_OVERLAY={overlay}",
        f"IMAGE={IMAGE}",
    ]
    try:
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), "release", *make_vars],
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
    finally:
        docker_ok("image", "rm", ref)  # 作ったタグだけを消す（元のイメージは残る）
    assert result.returncode == 0, result.stdout + result.stderr

    status, headers, _ = registry_request(
        registry, f"/v2/{repository}/manifests/{tag}", method="HEAD"
    )
    assert status == 200
    digest = headers["Docker-Content-Digest"]
    image = container(render(kubectl, overlay))["image"]
    assert image == f"127.0.0.1:{registry}/{repository}@{digest}"
    assert f"{IMAGE_NAME} -> {image}" in result.stdout

    # 固定したダイジェストのマニフェストは、push した元のイメージ（同じ設定）を指す
    manifest = json.loads(registry_request(registry, f"/v2/{repository}/manifests/{digest}")[2])
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert manifest["config"]["digest"] == inspect.stdout.strip()


def test_make_release_without_registry_explains_itself() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "release", "REGISTRY="],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "usage: make release REGISTRY=" in result.stderr
