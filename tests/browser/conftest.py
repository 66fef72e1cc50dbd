"""ブラウザテスト用：実サーバーと Debian の Chromium。

Chromium が無ければスキップ（MII_REQUIRE_BROWSER=1 なら失敗）。
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.browser import CHROMIUM
from support.requirements import unavailable
from support.servers import LiveServer, running_server


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """127.0.0.1 の実サーバー。"""
    with running_server(tmp_path_factory.mktemp("docs-server")) as server:
        yield server


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian の Chromium（playwright install は使わない）。"""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"{CHROMIUM} not found (apt-get install chromium; scripts/ci/system-deps.sh)"
    unavailable(reason, "MII_REQUIRE_BROWSER")
