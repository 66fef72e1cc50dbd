"""Ray Data の例（docs/model.md）：map_batches に RayScorer、アクター 2 つ、単一プロセスと同じ答え。

Ray は別のプロセス（ray_driver.py）が 127.0.0.1 だけで起こす（論理 CPU 4、ダッシュボードと
利用統計の送信は無し）。文書の例をそのまま実行し、不正な行の扱いも同じプロセスで確かめる。
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="Ray Data needs the ray extra: uv sync --extra ray")
if os.environ.get("MII_SKIP_RAY") == "1":
    pytest.skip("MII_SKIP_RAY=1: Ray Data tests skipped on request", allow_module_level=True)

from batch_engines.recipes import pq, prepare, recipe, same_rows, single_process

DRIVER = Path(__file__).with_name("ray_driver.py")
# 静かな 2 コアで約 50 秒（Ray の起動を含む）の 5 倍。超えたら混んだマシンとしてスキップ
DRIVER_TIMEOUT = 250
STARTUP_TIMEOUT_EXIT = 75

pytestmark = pytest.mark.timeout(DRIVER_TIMEOUT + 120)
# coverage（patch = subprocess）が子のプロセスに計測を引き継ぐための環境変数
COVERAGE_VARIABLES = frozenset({"COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"})


def _without_coverage() -> dict[str, str]:
    """coverage の subprocess の計測を外した環境（make test の --cov の下では Ray のノードの
    Python のプロセス全部が計測付きで起動し、ノードが 30 秒で起動しなかった）。"""
    return {k: v for k, v in os.environ.items() if k not in COVERAGE_VARIABLES}


@pytest.fixture(scope="module")
def ray_run() -> Iterator[tuple[Path, dict[str, Any]]]:
    """作業フォルダーで文書の例と不正な行の確かめを 1 回走らせる（Ray の起動は 1 回）。"""
    with tempfile.TemporaryDirectory(prefix="mii-ray-") as directory:
        work = prepare(Path(directory))
        (work / "recipe.py").write_text(recipe("map_batches("), encoding="utf-8")
        driver = subprocess.Popen(
            [sys.executable, str(DRIVER), "recipe.py"],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ray のノードのプロセスごと止められるように
            env=_without_coverage(),
        )
        try:
            _, stderr = driver.communicate(timeout=DRIVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
            pytest.skip(
                f"Ray Data did not finish in {DRIVER_TIMEOUT} s (about 50 s on a quiet 2-core "
                "machine): an overloaded machine"
            )
        if driver.returncode == STARTUP_TIMEOUT_EXIT:
            pytest.skip("Ray's node did not start in its fixed 30 s, twice (overloaded machine)")
        assert driver.returncode == 0, stderr[-4000:]
        yield work, json.loads((work / "result.json").read_text(encoding="utf-8"))


def test_the_documented_recipe_matches_the_single_process_cli(
    ray_run: tuple[Path, dict[str, Any]], clean_env: pytest.MonkeyPatch, restore_logging: None
) -> None:
    work, _ = ray_run
    got = pq.read_table(work / "scored-ray")
    same_rows(got, single_process(work))


def test_an_invalid_row_stops_or_is_skipped(ray_run: tuple[Path, dict[str, Any]]) -> None:
    """float32 に入らない値：既定は CLI と同じ理由（行と列）で止まり、skip はその行だけ除く。"""
    _, result = ray_run
    assert result["error"] is not None
    assert "row 8, column 2 'sepal length (cm)'" in result["error"]
    assert len(result["kept_ids"]) == result["rows"] - 1
    assert 7 not in result["kept_ids"]
