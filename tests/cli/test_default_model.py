"""同梱の既定モデル：models/ と同一、どのフォルダーからでも・インストールした wheel でも動く。"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

from model_in_image.runtime import sha256_of
from model_in_image.settings import DEFAULT_MODEL_DIR, Settings
from support.env import LOOPBACK, without_settings
from support.net import free_port, get_status, wait_for
from support.paths import MODEL_FILE, MODELS_DIR, REPO_ROOT
from support.servers import SERVE, START_TIMEOUT, LiveServer

MODEL_FILES = ("iris_svc.onnx", "label.json", "model_card.json")
# 親の make（make test）から受け継ぐと make -n の出力が変わる変数
MAKE_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
CSV_ROWS = b"5.1,3.5,1.4,0.2\n6.3,2.9,5.6,1.8\n"


@pytest.mark.parametrize("name", MODEL_FILES)
def test_embedded_copy_is_identical_to_models(name: str) -> None:
    """パッケージの既定モデルは models/ の写し（make train が両方を書く）。"""
    assert (DEFAULT_MODEL_DIR / name).read_bytes() == (MODELS_DIR / name).read_bytes()


def test_make_train_refreshes_the_embedded_copy() -> None:
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV}
    plan = subprocess.run(
        ["make", "-n", "train"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    files = " ".join(f"models/{name}" for name in MODEL_FILES)
    assert f"cp {files} src/model_in_image/default_model/" in plan
    assert plan.index("model-in-image train --output-dir models") < plan.index(f"cp {files}")


def test_settings_default_to_the_embedded_model(cli_env: pytest.MonkeyPatch) -> None:
    cli_env.delenv("MODEL_FILEPATH")
    cli_env.delenv("LABEL_FILEPATH")
    settings = Settings()
    assert settings.model_filepath == DEFAULT_MODEL_DIR / "iris_svc.onnx"
    assert settings.resolved_label_filepath == DEFAULT_MODEL_DIR / "label.json"
    assert settings.resolved_model_card_filepath.is_file()


def test_serve_the_default_from_another_folder(tmp_path: Path) -> None:
    """設定の環境変数なし、リポジトリの外のフォルダーから serve：同梱の Iris を提供する。"""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    port = free_port()
    log_path = tmp_path / "server.log"
    env = without_settings() | {"HOST": LOOPBACK, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(SERVE, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(process, port, log_path)
    try:
        wait_for(server.is_ready, START_TIMEOUT, "readiness", process)
        assert get_status(port, "/predict/test/label") == 200
        with urllib.request.urlopen(f"{server.base_url}/metadata", timeout=5) as response:
            metadata = json.loads(response.read())
    finally:
        server.stop()
    assert metadata["model_sha256"] == sha256_of(MODEL_FILE)
    assert metadata["model_name"] == "iris_svc"
    assert metadata["heldout_accuracy"] is not None  # 同梱のモデルカードも読まれた


def _uv() -> str:
    for candidate in (os.environ.get("UV"), shutil.which("uv"), str(REPO_ROOT / ".tools/bin/uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("uv not found (make test runs pytest through uv, which sets UV)")


def test_installed_wheel_works_from_any_folder(tmp_path: Path) -> None:
    """wheel を作って別の仮想環境に入れ、別のフォルダーから info と predict を実行する。

    依存関係はネットワークを使わないよう、この環境の site-packages を .pth で見せる
    （.pth で足したフォルダーの .pth は読まれないので、開発中の src は見えない）。
    """
    uv = _uv()
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--offline", "--out-dir", str(dist), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("model_in_image-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in MODEL_FILES:
            assert (
                archive.read(f"model_in_image/default_model/{name}")
                == (MODELS_DIR / name).read_bytes()
            )
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = without_settings()
    env.pop("PYTHONPATH", None)
    tool = str(venv / "bin" / "model-in-image")
    where = subprocess.run(
        [str(python), "-c", "import model_in_image; print(model_in_image.__file__)"],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(site)
    info = subprocess.run(
        [tool, "info"], cwd=folder, env=env, check=True, capture_output=True, timeout=120
    )
    assert json.loads(info.stdout)["metadata"]["model_sha256"] == sha256_of(MODEL_FILE)
    scored = subprocess.run(
        [tool, "predict", "-q"],
        cwd=folder,
        env=env,
        input=CSV_ROWS,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert [line.split(b",")[0] for line in scored.stdout.splitlines()[1:]] == [
        b"setosa",
        b"virginica",
    ]
