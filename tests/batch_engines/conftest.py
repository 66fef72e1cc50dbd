"""Ray Data・Spark の例のテスト：例のとおりの作業フォルダー（tests/batch_engines/recipes.py）。"""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_engines.recipes import prepare


@pytest.fixture
def workdir(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_env: pytest.MonkeyPatch,
    restore_logging: None,
) -> Path:
    """例のとおりの作業フォルダー：models/（リポジトリの models へのリンク）と data/。"""
    prepare(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path
