"""設定に効く環境変数を外の環境から切り離す。"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

from model_in_image.settings import Settings
from support.paths import LABEL_FILE, MODEL_FILE

SETTINGS_ENV = frozenset(name.upper() for name in Settings.model_fields)
LOOPBACK = "127.0.0.1"
# テストは既定の gRPC ポート（8081）で待ち受けない：同じマシンの他の実行と衝突する。
# gRPC を試すテストは空きポートを GRPC_PORT に渡す
NO_GRPC = {"GRPC_PORT": "0"}


def clear_settings_env(mp: pytest.MonkeyPatch) -> None:
    """設定に効く環境変数を消し、gRPC を無効にする（テスト後に元へ戻る）。"""
    for name in SETTINGS_ENV:
        mp.setenv(name, "")
        mp.delenv(name)
    for name, value in NO_GRPC.items():
        mp.setenv(name, value)


def without_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """環境変数から設定に効くものを除いた写し（子プロセス用）。"""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k.upper() not in SETTINGS_ENV}


def server_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """同梱モデルと 127.0.0.1 を指し gRPC を切った子プロセスの環境（親の設定は引き継がない）。"""
    env = without_settings()
    env.update(
        {
            "HOST": LOOPBACK,
            "MODEL_FILEPATH": str(MODEL_FILE),
            "LABEL_FILEPATH": str(LABEL_FILE),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **NO_GRPC,
        }
    )
    # 古いコードのサーバーに同じテストを当てる（例：MII_SERVER_SRC=/tmp/old/src で修正前を再現）
    if os.environ.get("MII_SERVER_SRC"):
        env["PYTHONPATH"] = os.environ["MII_SERVER_SRC"]
    env.update(overrides or {})
    return env
