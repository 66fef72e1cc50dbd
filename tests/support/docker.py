"""コンテナのテストの補助（docker CLI、127.0.0.1 への HTTP、起動したコンテナの操作）。"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from support.net import free_ports
from support.paths import REFERENCE_DIR
from support.requirements import unavailable as missing

REFERENCE_MODEL = REFERENCE_DIR / "iris_svc.onnx"
IMAGE = os.environ.get("MII_IMAGE", "model-in-image-pattern:v1.0")
IMAGE_MODEL_PATH = "/model_in_image_pattern/models/iris_svc.onnx"
CONTAINER_PORT = 8000
CONTAINER_GRPC_PORT = 8081
DOCKER_TIMEOUT = 60.0
START_TIMEOUT = 30.0


def unavailable(reason: str) -> NoReturn:
    """Docker が無いときの扱い：普段はスキップ、MII_REQUIRE_DOCKER=1 なら失敗。"""
    missing(reason, "MII_REQUIRE_DOCKER")


def docker(
    *args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """docker CLI を時間制限つきで実行する。"""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """新しい接続で GET する。"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_post_json(port: int, path: str, payload: Any, timeout: float = 5.0) -> tuple[int, Any]:
    """新しい接続で JSON を POST し、JSON の応答を返す。"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps(payload)
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@dataclass
class Container:
    """テスト用に起動したコンテナ。"""

    name: str
    port: int
    started_at: float
    grpc_port: int = 0
    ready_after: float | None = None

    def inspect(self) -> dict[str, Any]:
        """docker inspect の結果。"""
        out = docker("container", "inspect", self.name).stdout
        result: dict[str, Any] = json.loads(out)[0]
        return result

    def state(self) -> dict[str, Any]:
        """State（Running・ExitCode・Health）。"""
        state: dict[str, Any] = self.inspect()["State"]
        return state

    def logs(self) -> str:
        """標準出力と標準エラーをまとめたログ。"""
        proc = docker("logs", self.name)
        return proc.stdout + proc.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        """コンテナの中でコマンドを実行する（イメージの USER のまま）。"""
        return docker("exec", self.name, *command, check=False)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """/health が 200 を返すまで待ち、docker run からの秒数を返す。"""
        deadline = time.monotonic() + timeout
        next_state_check = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                status, _ = http_get(self.port, "/health", timeout=1.0)
            except OSError:
                status = 0
            if status == 200:
                self.ready_after = time.monotonic() - self.started_at
                return self.ready_after
            # docker inspect は重いので 0.5 秒ごとに、起動に失敗して止まっていないかを見る
            if time.monotonic() >= next_state_check:
                if not self.state()["Running"]:
                    pytest.fail(f"container {self.name} exited during start-up:\n{self.logs()}")
                next_state_check = time.monotonic() + 0.5
            time.sleep(0.02)
        pytest.fail(f"container {self.name}: no 200 on /health within {timeout}s:\n{self.logs()}")

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """コンテナの終了を待ち、終了コードを返す。"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if not state["Running"] and state["Status"] != "created":
                return int(state["ExitCode"])
            time.sleep(0.1)
        pytest.fail(f"container {self.name} still running after {timeout}s:\n{self.logs()}")


@dataclass
class DockerEnv:
    """使えるエンジンとイメージ。"""

    image: str
    image_info: dict[str, Any]
    host_network: bool

    def run_args(self, port: int, grpc_port: int) -> list[str]:
        """ネットワークの引数（ブリッジがあれば 127.0.0.1 に公開、無ければホストで待ち受け）。

        HTTP と gRPC の両方を、ホストの 127.0.0.1 の空きポートで受ける。
        """
        if self.host_network:
            return [
                "--network", "host", "-e", "HOST=127.0.0.1",
                "-e", f"PORT={port}", "-e", f"GRPC_PORT={grpc_port}",
            ]  # fmt: skip
        return [
            "-p", f"127.0.0.1:{port}:{CONTAINER_PORT}",
            "-p", f"127.0.0.1:{grpc_port}:{CONTAINER_GRPC_PORT}",
        ]  # fmt: skip


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
        port, grpc_port = free_ports(2)
        env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        self.names.append(name)
        started = time.monotonic()
        docker(
            "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
            *self.docker_env.run_args(port, grpc_port), *env_args, *args, self.docker_env.image,
        )  # fmt: skip
        container = Container(name=name, port=port, started_at=started, grpc_port=grpc_port)
        if wait:
            container.wait_ready()
        return container

    def remove_all(self) -> None:
        """起動したコンテナをすべて削除する。"""
        for name in self.names:
            docker("rm", "-f", "-v", name, check=False)
        self.names.clear()


BUILD_TIMEOUT = 900.0
PARENT_MAKE_ENV = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"})


class ImageBuilder:
    """テストが自分で作るイメージ（一意のタグ、テストの後で必ず削除）。

    土台は試験対象のイメージと同じ（依存関係の層はそのビルドのキャッシュを使う）。
    既定ブリッジの無いエンジンでは docker build も --network host。
    """

    def __init__(self, docker_env: DockerEnv, repo: Path) -> None:
        self.docker_env = docker_env
        self.repo = repo
        self.base = docker_env.image_info["Config"]["Labels"]["org.opencontainers.image.base.name"]
        self.tags: list[str] = []

    def tag(self, name: str) -> str:
        """一意のタグを作って覚える。"""
        tag = f"mii-test-{name}-{uuid.uuid4().hex[:8]}:test"
        self.tags.append(tag)
        return tag

    def make_image(self, tag: str, **variables: str) -> subprocess.CompletedProcess[str]:
        """`make image VAR=...` を実行する（失敗しても例外にしない）。"""
        args = [f"{k}={v}" for k, v in {"IMAGE": tag, "BASE_IMAGE": self.base, **variables}.items()]
        # make test の中から呼ぶので、親の make の設定（ジョブサーバなど）は引き継がない
        env = {k: v for k, v in os.environ.items() if k not in PARENT_MAKE_ENV}
        return subprocess.run(
            ["make", "--no-print-directory", "image", *args],
            cwd=self.repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )

    def docker_build(self, tag: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        """リポジトリをコンテキストにした素の docker build（tag が None ならタグなし）。"""
        network = ["--network", "host"] if self.docker_env.host_network else []
        tagging = ["-t", tag] if tag else []
        return docker(
            "build", *network, "--force-rm", "--build-arg", f"BASE_IMAGE={self.base}",
            *tagging, *args, str(self.repo),
            timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip

    def env_for(self, tag: str) -> DockerEnv:
        """そのイメージを起動するための DockerEnv。"""
        info = json.loads(docker("image", "inspect", tag).stdout)[0]
        return DockerEnv(image=tag, image_info=info, host_network=self.docker_env.host_network)

    def remove_all(self) -> None:
        """作ったイメージをすべて削除する。"""
        for tag in self.tags:
            docker("rmi", "-f", tag, check=False)
        self.tags.clear()
