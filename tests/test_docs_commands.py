"""README.md と docs/*.md のシェルのコマンドを書かれたとおりに実行する（ずれたら失敗）。

オフラインで動くブロックだけを実行する：`/tmp/` はテストの一時フォルダーに、`:8000`・`:8081`
はテストが 127.0.0.1 に起動したサーバーに、`uv run` はこのリポジトリの .venv に置き換える。
行末の `# error` は「失敗するはずの例」（終了コード 0 なら失敗）。Docker・クラスター・PyPI・
長い処理（テスト一式・ベンチマーク・前面のサーバー）のブロックは理由を示してスキップする。
docs/byom.md の「モデルの種類ごとの例」（`<!-- byom-example: 名前 -->` から次の例か `## ` の
見出しまで）は、例ごとに自分のモデルのサーバーを要るので tests/test_docs_byom.py が実行する。
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.servers import LiveServer, running_server
from support.shell import UV_SHIM, run_bash

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.M | re.S)
EXAMPLE = re.compile(r"^<!-- byom-example: [\w-]+ -->$|^## ", re.M)
BLOCK_TIMEOUT = 300
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
PRELUDE = f"""
set -euo pipefail
{UV_SHIM}
curl() {{
  case " $* " in
    *" -f"* | *" -sf"* | *" --fail"*) command curl --max-time 30 "$@" ;;
    *) command curl --fail-with-body --max-time 30 "$@" ;;
  esac
}}
"""


@dataclass(frozen=True)
class Block:
    """文書の bash のブロック 1 つ。"""

    page: Path
    number: int
    text: str
    in_example: bool = False

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}#{self.number}"

    def skip_reason(self) -> str | None:
        if self.in_example:
            return "a worked model example: tests/test_docs_byom.py runs it with its own server"
        for reason, words in SKIPS:
            if any(word in self.text for word in words):
                return reason
        return None


def blocks() -> Iterator[Block]:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(BLOCK.finditer(text), 1):
            starts = [m.group(0) for m in EXAMPLE.finditer(text, 0, match.start())]
            in_example = bool(starts) and starts[-1].startswith("<!--")
            yield Block(page, number, match.group(1), in_example)


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
    run_bash(script(block.text, workdir, server), BLOCK_TIMEOUT, {"API_URL": server.base_url})
