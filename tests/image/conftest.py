"""コンテナのテスト用フィクスチャ（Docker エンジンとイメージ、後片付けつきのコンテナ起動）。

エンジンかイメージが無ければ理由を示してスキップする。MII_REQUIRE_DOCKER=1（CI）なら失敗にする。
通信先は 127.0.0.1 だけ。既定ブリッジの無いエンジン（dockerd --bridge=none）では --network host。
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from .support import IMAGE, Container, DockerEnv, docker, free_port, unavailable

FIGURES = pytest.StashKey[list[str]]()


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


class Launcher:
    """コンテナを起動し（--read-only・tmpfs /tmp）、起動したものを覚えておいて最後に削除する。"""

    def __init__(self, docker_env: DockerEnv) -> None:
        self.docker_env = docker_env
        self.names: list[str] = []

    def start(
        self,
        *,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        wait: bool = True,
    ) -> Container:
        """コンテナを起動する。wait なら /health が 200 になるまで待つ。"""
        name = f"mii-test-{uuid.uuid4().hex[:10]}"
        port = free_port()
        env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        self.names.append(name)
        started = time.monotonic()
        docker(
            "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
            *self.docker_env.run_args(port), *env_args, *args, self.docker_env.image,
        )  # fmt: skip
        container = Container(name=name, port=port, started_at=started)
        if wait:
            container.wait_ready()
        return container

    def remove_all(self) -> None:
        """起動したコンテナをすべて削除する。"""
        for name in self.names:
            docker("rm", "-f", "-v", name, check=False)
        self.names.clear()


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

    def record(line: str) -> None:
        pytestconfig.stash.setdefault(FIGURES, []).append(line)

    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """コンテナのテストで測った値を表示する。"""
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("model-in-image container figures")
        for line in lines:
            terminalreporter.write_line(line)
