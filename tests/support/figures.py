"""テストで測った値を記録し、テストの最後に節ごとにまとめて表示する（CI のログに残す）。"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

FIGURES = pytest.StashKey[dict[str, list[str]]]()


def figure_recorder(config: pytest.Config, section: str) -> Callable[[str], None]:
    """section の節に 1 行ずつ記録する関数。"""

    def record(line: str) -> None:
        config.stash.setdefault(FIGURES, {}).setdefault(section, []).append(line)

    return record


def print_figures(terminalreporter: Any, config: pytest.Config) -> None:
    """記録した値を節ごとに表示する。"""
    for section, lines in config.stash.get(FIGURES, {}).items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
