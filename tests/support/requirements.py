"""テストに要るもの（Docker・kubectl・Chromium）が無いときの扱い。"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str, require: str) -> NoReturn:
    """普段は理由を示してスキップ、require の環境変数が 1（CI）なら失敗にする。"""
    if os.environ.get(require) == "1":
        pytest.fail(f"{reason} ({require}=1)", pytrace=False)
    pytest.skip(reason)
