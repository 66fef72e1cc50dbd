"""README.md と docs/*.md のシェルのコマンドを書かれたとおりに実行する（ずれたら失敗）。

オフラインで動くブロックだけを実行する：`/tmp/` はテストの一時フォルダーに、`:8000`・`:8081`
はテストが 127.0.0.1 に起動したサーバーに、`uv run` はこのリポジトリの .venv に置き換える。
行末の `# error` は「失敗するはずの例」（終了コード 0 なら失敗）。Docker・クラスター・PyPI・
長い処理（テスト一式・ベンチマーク・前面のサーバー）のブロックは理由を示してスキップする。
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.servers import LiveServer, running_server

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.M | re.S)
BLOCK_TIMEOUT = 120
# (理由, ブロックに含まれれば実行しない語)
SKIPS: list[tuple[str, tuple[str, ...]]] = [
    ("needs a Docker engine", ("docker ", "make image", "make test-image", "base-image")),
    ("needs a Kubernetes cluster", ("kubectl", "minikube", "make deploy", "k8s-load-image")),
    ("needs a registry", ("make release",)),
    ("needs PyPI (network)", ("pip install",)),
    ("runs the whole suite", ("make test", "make checkov")),
    ("a benchmark (minutes; see docs/benchmarks.md)", ("bench", "loadtest", "iris-1m")),
    ("a server in the foreground", ("make run",)),
    ("rewrites the repository's model", ("make train",)),
]
# `uv run [--frozen] コマンド` は .venv のコマンドに。curl は 4xx・5xx で失敗させる
PRELUDE = """
set -euo pipefail
uv() { [ "$1" = run ] || return 99; shift; [ "${1:-}" = --frozen ] && shift; "$@"; }
curl() {
  case " $* " in
    *" -f"* | *" -sf"* | *" --fail"*) command curl --max-time 30 "$@" ;;
    *) command curl --fail-with-body --max-time 30 "$@" ;;
  esac
}
"""


@dataclass(frozen=True)
class Block:
    """文書の bash のブロック 1 つ。"""

    page: Path
    number: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}#{self.number}"

    def skip_reason(self) -> str | None:
        for reason, words in SKIPS:
            if any(word in self.text for word in words):
                return reason
        return None


def blocks() -> Iterator[Block]:
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
            yield Block(page, number, match.group(1))


def script(text: str, tmp: Path, server: LiveServer) -> str:
    """ブロックをこのテストの環境で動く形にする。"""
    text = text.replace("/tmp/", f"{tmp}/")
    text = re.sub(r"(?:127\.0\.0\.1|localhost):8000", f"127.0.0.1:{server.port}", text)
    text = text.replace("127.0.0.1:8081", server.grpc_target)
    lines = []
    for line in text.splitlines():
        command, mark, _ = line.partition("# error")
        lines.append(f"if {command.strip()}; then exit 97; fi" if mark else line)
    return PRELUDE + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """文書の curl が呼ぶサーバー（このリポジトリのモデル、gRPC つき）。"""
    with running_server(tmp_path_factory.mktemp("docs-server"), grpc=True) as live:
        yield live


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`/tmp/` の代わり（同じページのブロックは前のブロックの結果を使う）。"""
    return tmp_path_factory.mktemp("docs-tmp")


ALL = list(blocks())


def test_the_pages_have_blocks() -> None:
    assert len(ALL) > 50
    assert sum(block.skip_reason() is None for block in ALL) >= 10


@pytest.mark.parametrize("block", ALL, ids=[block.id for block in ALL])
def test_doc_block_runs_as_written(block: Block, server: LiveServer, workdir: Path) -> None:
    reason = block.skip_reason()
    if reason is not None:
        pytest.skip(f"{block.id}: {reason}")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "API_URL": server.base_url,
    }
    result = subprocess.run(
        ["bash", "-c", script(block.text, workdir, server)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{block.id} exited {result.returncode}\n--- block\n{block.text}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
