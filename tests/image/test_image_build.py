"""イメージそのものの検査：ラベル・実行ユーザー・ヘルスチェック・同梱物・ビルド時の完全性確認。"""

from __future__ import annotations

import hashlib
import re

import pytest

from support.docker import IMAGE_MODEL_PATH, DockerEnv, docker
from support.paths import MODEL_FILE, REPO_ROOT

pytestmark = [pytest.mark.image, pytest.mark.timeout(120)]

UID = "10001"


def _model_sha256() -> str:
    return hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()


def _env(docker_env: DockerEnv) -> dict[str, str]:
    items = (str(item).partition("=") for item in docker_env.image_info["Config"]["Env"])
    return {name: value for name, _, value in items}


def test_labels_record_version_revision_and_model_hash(docker_env: DockerEnv) -> None:
    labels = docker_env.image_info["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"]
    assert labels["org.opencontainers.image.revision"]
    assert labels["org.opencontainers.image.base.name"]
    recorded = labels["io.model-in-image.model.sha256"]
    # make image は MODEL_SHA256 を渡す。素の docker build ならラベルは空（モデルカードで確認）
    if recorded:
        assert recorded == _model_sha256(), "image is stale: rebuild it with `make image`"
        assert _env(docker_env)["MODEL_SHA256"] == recorded


def test_image_settings(docker_env: DockerEnv) -> None:
    config = docker_env.image_info["Config"]
    env = _env(docker_env)
    assert config["User"] == f"{UID}:{UID}"
    assert {"8000/tcp", "8081/tcp"} <= set(config["ExposedPorts"])
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == "8000"
    assert env["MODEL_FILEPATH"] == IMAGE_MODEL_PATH
    assert env["LABEL_FILEPATH"] == "/model_in_image_pattern/models/label.json"
    assert env["ORT_DISABLE_TELEMETRY"] == "1"  # 送信もデバイス ID の書き込みもしない
    # exec 形式（シェルを挟まない）：SIGTERM がサーバーに届く
    assert config["Entrypoint"][0].endswith("/model-in-image")
    assert config["Cmd"] == ["serve"]
    health = config["Healthcheck"]["Test"]
    assert health[0] == "CMD"
    assert health[1] == "python3"
    assert "/health" in health[-1]


def test_no_compilers_curl_or_training_libraries(docker_env: DockerEnv) -> None:
    script = (
        "for tool in gcc cc g++ make curl wget; do command -v $tool && exit 1; done; "
        'python3 -c "import importlib.util as u, sys; '
        "found = [m for m in ('sklearn', 'skl2onnx', 'onnx', 'pytest', 'mypy', 'locust') "
        "if u.find_spec(m)]; sys.exit(f'present: {found}' if found else 0)\""
    )
    proc = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", docker_env.image, "-c", script,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_model_is_baked_in_readonly_for_the_app(docker_env: DockerEnv) -> None:
    script = f"sha256sum {IMAGE_MODEL_PATH}; test -w {IMAGE_MODEL_PATH} && echo writable; id -u"
    proc = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", docker_env.image, "-c", script
    )  # fmt: skip
    lines = proc.stdout.split()
    assert lines[0] == _model_sha256()
    assert "writable" not in lines
    assert lines[-1] == UID


@pytest.mark.timeout(600)
def test_wrong_model_sha256_fails_the_build(docker_env: DockerEnv) -> None:
    labels = docker_env.image_info["Config"]["Labels"]
    network = ["--network", "host"] if docker_env.host_network else []
    proc = docker(
        "build", *network, "--force-rm", "--target", "builder",
        "--build-arg", f"BASE_IMAGE={labels['org.opencontainers.image.base.name']}",
        "--build-arg", f"MODEL_SHA256={'0' * 64}",
        str(REPO_ROOT),
        timeout=540, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert re.search(r"iris_svc\.onnx: FAILED", output), output[-2000:]
