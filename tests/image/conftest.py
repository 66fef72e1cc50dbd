"""コンテナのテスト用フィクスチャ（Docker エンジンとイメージ、後片付けつきのコンテナ起動）。

エンジンかイメージが無ければ理由を示してスキップする。MII_REQUIRE_DOCKER=1（CI）なら失敗にする。
通信先は 127.0.0.1 だけ。既定ブリッジの無いエンジン（dockerd --bridge=none）では --network host。
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

from support.docker import IMAGE, DockerEnv, ImageBuilder, Launcher, docker, unavailable
from support.figures import figure_recorder
from support.paths import REPO_ROOT


@pytest.fixture(scope="session")
def docker_env() -> DockerEnv:
    """Docker エンジンが応答し、テスト対象のイメージがあること。"""
    if shutil.which("docker") is None:
        unavailable("docker CLI not found")
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=15, check=False)
    except subprocess.TimeoutExpired:
        unavailable("Docker engine did not answer `docker info` within 15 s")
    if info.returncode != 0:
        unavailable(f"no Docker engine answers `docker info`: {info.stderr.strip()[:200]}")
    image = docker("image", "inspect", IMAGE, check=False)
    if image.returncode != 0:
        unavailable(f"image {IMAGE} not found: build it with `make image`")
    bridge = docker("network", "inspect", "bridge", check=False)
    return DockerEnv(
        image=IMAGE, image_info=json.loads(image.stdout)[0], host_network=bridge.returncode != 0
    )


@pytest.fixture
def launcher(docker_env: DockerEnv) -> Iterator[Launcher]:
    """テストごとのコンテナ（テストの後で必ず削除）。"""
    launch = Launcher(docker_env)
    yield launch
    launch.remove_all()


@pytest.fixture(scope="module")
def module_launcher(docker_env: DockerEnv) -> Iterator[Launcher]:
    """モジュールで共有するコンテナ（モジュールの後で必ず削除）。"""
    launch = Launcher(docker_env)
    yield launch
    launch.remove_all()


@pytest.fixture(scope="session")
def record_figure(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """測った値を記録し、テストの最後にまとめて表示する。"""
    return figure_recorder(pytestconfig, "model-in-image container figures")


@pytest.fixture(scope="session")
def image_builder(docker_env: DockerEnv) -> Iterator[ImageBuilder]:
    """テストが作るイメージ（セッションの後で必ず削除）。"""
    builder = ImageBuilder(docker_env, REPO_ROOT)
    yield builder
    builder.remove_all()
