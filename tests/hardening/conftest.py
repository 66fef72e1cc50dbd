"""堅牢性テスト用：実サーバー（127.0.0.1）と共通の入力。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from v2.live_server import LiveServer, running_server

SETOSA = [5.1, 3.5, 1.4, 0.2]
PREDICT_BODY = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """モジュールで共有する実サーバー（keep-alive・リクエスト受信のタイムアウトは 2 秒）。"""
    env = {"TIMEOUT_KEEP_ALIVE": "2", "REQUEST_TIMEOUT_SECONDS": "2"}
    with running_server(tmp_path_factory.mktemp("hardening-server"), env) as server:
        yield server
