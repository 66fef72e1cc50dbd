"""堅牢性テスト用：実サーバー（127.0.0.1）と共通の入力。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.servers import LiveServer, running_server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """モジュールで共有する実サーバー（keep-alive・リクエスト受信のタイムアウトは 2 秒）。"""
    env = {"TIMEOUT_KEEP_ALIVE": "2", "REQUEST_TIMEOUT_SECONDS": "2"}
    with running_server(tmp_path_factory.mktemp("hardening-server"), env) as server:
        yield server
