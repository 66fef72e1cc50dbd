"""動いているコンテナ：シード API、読み取り専用・非 root、ヘルスチェック、JSON ログ、改ざん検出。"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from support.docker import (
    IMAGE_MODEL_PATH,
    REFERENCE_MODEL,
    Container,
    DockerEnv,
    Launcher,
    docker,
    http_get,
    http_post_json,
)
from support.grpc_v2 import SERVING, health_status
from support.paths import MODEL_FILE

pytestmark = [pytest.mark.image, pytest.mark.timeout(120)]

SPECIES = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([5.9, 3.0, 4.2, 1.5], "versicolor"),
    ([6.3, 2.9, 5.6, 1.8], "virginica"),
]
LABELS = ["setosa", "versicolor", "virginica"]
# ヘルスチェックを 1 秒間隔にして healthy になるまでを短くする
FAST_HEALTH = ["--health-interval=1s", "--health-timeout=3s", "--health-retries=3"]
COLD_RUNS = 3
# 目標は 1 秒未満（docs/docker.md）。時間は共有のマシンで大きく揺れるので、ここでは桁違いの退行
# だけを落とし、.pyc が使われていることは test_start_up_imports_come_from_bytecode が確かめる
COLD_START_LIMIT_S = 5.0
# サーバーの起動で読むモジュール（設定・uvicorn の設定の読み込み・モデルの読み込みまで）
START_UP_IMPORTS = (
    "from model_in_image.cli import main; from model_in_image.settings import Settings; "
    "from model_in_image.server import uvicorn_config; "
    "from model_in_image.loading import load_dataplane; "
    "uvicorn_config(Settings(), multiprocess=False).load(); load_dataplane(Settings())"
)


@pytest.fixture(scope="module")
def served(module_launcher: Launcher, record_figure: Callable[[str], None]) -> Container:
    """イメージの既定のまま起動したコンテナ（--read-only、tmpfs /tmp だけ書き込み可）。"""
    container = module_launcher.start(args=FAST_HEALTH)
    assert container.ready_after is not None
    record_figure(f"docker run -> first 200 on /health: {container.ready_after:.2f} s")
    return container


def test_starts_quickly(served: Container) -> None:
    assert served.ready_after is not None
    assert served.ready_after < 5.0, f"first /health 200 after {served.ready_after:.2f} s"


def test_cold_start_median(launcher: Launcher, record_figure: Callable[[str], None]) -> None:
    """docker run → /health 200 を新しいコンテナで 3 回（中央値。共有マシンでは揺れる）。"""
    times = []
    for _ in range(COLD_RUNS):
        container = launcher.start()
        assert container.ready_after is not None
        times.append(container.ready_after)
        docker("rm", "-f", "-v", container.name)  # 次の測定と CPU を取り合わない
    median = statistics.median(times)
    runs = ", ".join(f"{t:.2f}" for t in times)
    record_figure(
        f"docker run -> first 200 on /health, median of {COLD_RUNS} cold runs: {median:.2f} s "
        f"({runs})"
    )
    assert median < COLD_START_LIMIT_S, f"median {median:.2f} s over {COLD_RUNS} runs ({runs})"


def _loaded_code(image: str, code: str) -> tuple[list[str], str]:
    """python -v でコードを実行し、コードを読んだ場所（.pyc かソース）の一覧と標準エラー。"""
    proc = docker(
        "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
        "--entrypoint", "python3", image, "-v", "-c", code,
    )  # fmt: skip
    loaded = re.findall(r"^# code object from '?(/[^' ]+)", proc.stderr, re.M)
    return loaded, proc.stderr


def test_start_up_imports_come_from_bytecode(docker_env: DockerEnv) -> None:
    """起動の経路のモジュールはすべて .pyc から読む（ソースからだと起動が約 3 倍になる）。

    依存関係だけでなく標準ライブラリも（イメージは使わない標準ライブラリの .pyc を除いている）。
    """
    loaded, stderr = _loaded_code(docker_env.image, START_UP_IMPORTS)
    app = [path for path in loaded if path.startswith("/model_in_image_pattern/")]
    assert len(app) > 300, stderr[-2000:]
    assert len(loaded) - len(app) > 100, stderr[-2000:]  # 標準ライブラリ
    assert [path for path in loaded if not path.endswith(".pyc")] == []


def test_healthcheck_imports_come_from_bytecode(docker_env: DockerEnv) -> None:
    """HEALTHCHECK のコマンド（10 秒ごと）が読むモジュールも .pyc から（毎回コンパイルしない）。"""
    command = docker_env.image_info["Config"]["Healthcheck"]["Test"][-1]
    code = command.split("; r.urlopen", 1)[0]  # 要求は送らない（import だけ）
    assert code.startswith("import ")
    loaded, stderr = _loaded_code(docker_env.image, code)
    assert len(loaded) > 20, stderr[-2000:]
    assert [path for path in loaded if not path.endswith(".pyc")] == []


def test_health(served: Container) -> None:
    assert http_get(served.port, "/health") == (200, b'{"health":"ok"}')


def test_metadata(served: Container) -> None:
    status, body = http_get(served.port, "/metadata")
    assert status == 200
    meta = json.loads(body)
    assert meta["data_type"] == "float32"
    assert meta["data_structure"] == "(1,4)"
    assert meta["data_sample"] == [[5.1, 3.5, 1.4, 0.2]]
    assert meta["prediction_structure"] == "(1,3)"
    assert len(meta["prediction_sample"]) == 3
    assert meta["model_sha256"] == hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()


def test_label(served: Container) -> None:
    status, body = http_get(served.port, "/label")
    assert status == 200
    assert json.loads(body) == {"0": "setosa", "1": "versicolor", "2": "virginica"}


def test_predict_test(served: Container) -> None:
    status, body = http_get(served.port, "/predict/test")
    assert status == 200
    proba = json.loads(body)["prediction"]
    assert len(proba) == 3
    assert abs(sum(proba) - 1.0) < 1e-4
    assert http_get(served.port, "/predict/test/label") == (200, b'{"prediction":"setosa"}')


@pytest.mark.parametrize(("row", "species"), SPECIES)
def test_predict_species(served: Container, row: list[float], species: str) -> None:
    status, body = http_post_json(served.port, "/predict", {"data": [row]})
    assert status == 200
    proba = body["prediction"]
    assert LABELS[proba.index(max(proba))] == species
    assert http_post_json(served.port, "/predict/label", {"data": [row]}) == (
        200,
        {"prediction": species},
    )


def test_predict_batch(served: Container) -> None:
    rows = [row for row, _ in SPECIES]
    status, body = http_post_json(served.port, "/predict/label", {"data": rows})
    assert status == 200
    assert body == {"prediction": [species for _, species in SPECIES]}
    status, body = http_post_json(served.port, "/predict", {"data": rows})
    assert status == 200
    assert len(body["prediction"]) == 3


def test_grpc_serves_the_same_model(served: Container) -> None:
    """gRPC（Open Inference Protocol、コンテナの 8081）：ヘルスが SERVING で、3 品種を推論する。"""
    target = f"127.0.0.1:{served.grpc_port}"
    assert health_status(target) == SERVING
    with triton.InferenceServerClient(target) as client:
        rows = np.array([row for row, _ in SPECIES], dtype=np.float32)
        tensor = triton.InferInput("X", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer("iris_svc", [tensor], request_id="image", client_timeout=10.0)
    assert result.get_response().id == "image"
    labels = result.as_numpy("label")
    assert labels is not None
    assert [v.decode() for v in labels.tolist()] == LABELS


def test_runs_read_only_as_non_root(served: Container) -> None:
    info = served.inspect()
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["Config"]["User"] == "10001:10001"
    status = served.exec("cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["10001"] * 4
    assert served.exec("id", "-u").stdout.strip() == "10001"
    # ルートファイルシステムにもモデルにも書けない（/tmp だけ tmpfs）
    assert served.exec("touch", "/model_in_image_pattern/x").returncode != 0
    assert served.exec("sh", "-c", f"echo x >> {IMAGE_MODEL_PATH}").returncode != 0
    assert served.exec("touch", "/tmp/x").returncode == 0


def test_healthcheck_turns_healthy(served: Container, record_figure: Callable[[str], None]) -> None:
    deadline = time.monotonic() + 30
    while (health := served.state()["Health"]["Status"]) != "healthy":
        assert health in {"starting", "healthy"}, served.state()["Health"]
        assert time.monotonic() < deadline, "HEALTHCHECK not healthy within 30 s"
        time.sleep(0.2)
    elapsed = time.monotonic() - served.started_at
    record_figure(f"docker run -> HEALTHCHECK healthy (1 s interval): {elapsed:.2f} s")


def test_json_logs(launcher: Launcher) -> None:
    container = launcher.start(env={"LOG_FORMAT": "JSON"})
    assert http_get(container.port, "/predict/test")[0] == 200
    lines = [line for line in container.logs().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # JSON でない行があればここで失敗
    assert all(isinstance(r, dict) and {"level", "message"} <= r.keys() for r in records)
    assert any("model loaded" in r["message"] for r in records)


def _appended(tmp_path: Path) -> Path:
    """モデルの末尾に未知のフィールドを足した写し（ONNX としては読めるが sha256 が違う）。"""
    copy = tmp_path / "iris_svc.onnx"
    copy.write_bytes(MODEL_FILE.read_bytes() + b"\xa0\x06\x01")
    return copy


def _reference(tmp_path: Path) -> Path:
    """教科書のモデル（別のモデル。models/reference に同梱）。"""
    return Path(shutil.copy(REFERENCE_MODEL, tmp_path / "iris_svc.onnx"))


@pytest.mark.parametrize(
    ("make_model", "env", "expected"),
    [
        pytest.param(_reference, {}, "integrity", id="reference", marks=pytest.mark.reference),
        pytest.param(_appended, {"MODEL_SHA256": ""}, "model card", id="changed-bytes"),
        pytest.param(lambda _: MODEL_FILE, {"MODEL_SHA256": "0" * 64}, "MODEL_SHA256", id="env"),
    ],
)
def test_tampered_model_is_refused(
    launcher: Launcher,
    tmp_path: Path,
    make_model: Callable[[Path], Path],
    env: dict[str, str],
    expected: str,
) -> None:
    model = make_model(tmp_path)
    model.chmod(0o644)
    mount = ["-v", f"{model}:{IMAGE_MODEL_PATH}:ro"]
    container = launcher.start(env=env, args=mount, wait=False)
    exit_code = container.wait_exit()
    logs = container.logs()
    assert exit_code != 0, logs
    assert "integrity check failed" in logs
    assert expected in logs
