"""文書のシェルのブロックを bash で実行する（tests/test_docs_commands.py・test_docs_byom.py）。"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from support.paths import REPO_ROOT

# `uv run [--frozen] コマンド` は、テストを動かしている .venv のコマンドにする
UV_SHIM = 'uv() { [ "$1" = run ] || return 99; shift; [ "${1:-}" = --frozen ] && shift; "$@"; }'


def run_bash(script: str, timeout: float, env: Mapping[str, str] | None = None) -> str:
    """script をリポジトリのルートで実行し、標準出力を返す（終了コードが 0 でなければ失敗）。

    PATH の先頭はこの .venv の bin（`python3`・`model-in-image` はこの環境のもの）。
    """
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"exited {result.returncode}\n--- script\n{script}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    return result.stdout
