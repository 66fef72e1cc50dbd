"""docs/byom.md の「モデルの種類ごとの例」を書かれたとおりに実行する（書き出し → 起動 → 答え）。

例は `<!-- byom-example: 名前 -->` の行で始まり、次の例か次の `## ` の見出しまで続く。
その中の bash のブロックを順に扱う：

- 書き出し（そのほかのブロック）：`/tmp/` をテストの一時フォルダーにして実行する。
- 起動（`uv run model-in-image serve ...`。前に `VAR=値` があれば環境変数）：その引数で
  サーバーを 127.0.0.1 の空きポートに起動し、/readyz を待つ。ラベルファイルは引数のものだけ
  （テストの既定の Iris のラベルは渡さない）。
- リクエスト（curl を含むブロック）：直後の ```json か ```text のブロックが、その標準出力
  そのもの。JSON として読める出力は値として比べ、実数だけは相対 1e-5・絶対 1e-6 の差を許す
  （学習をこの場でやり直すので、CPU や BLAS の違いで最後の桁が変わりうる）。ほかの行は文字
  どおりに比べる。

`/tmp/byom-env/bin/python` を使う例（LightGBM・XGBoost・CatBoost・PyTorch・pandas）は、
`make zoo` の `.zoo-venv`（同じ版のフレームワーク）で実行する。それが無ければ理由を示して
スキップする（`MII_REQUIRE_ZOO=1` なら失敗）。`MII_ZOO_VENV` で別の venv を指せる。
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.paths import REPO_ROOT
from support.requirements import unavailable
from support.servers import LiveServer, running_server
from support.shell import UV_SHIM, run_bash

PAGE = REPO_ROOT / "docs" / "byom.md"
MARKER = re.compile(r"^<!-- byom-example: ([\w-]+) -->$", re.M)
CHAPTER = re.compile(r"^## ", re.M)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
FRAMEWORK_PYTHON = "/tmp/byom-env/bin/python"
ZOO_VENV = Path(os.environ.get("MII_ZOO_VENV") or REPO_ROOT / ".zoo-venv")
REQUIRE_ZOO = "MII_REQUIRE_ZOO"
BLOCK_TIMEOUT = 300
# 書き出しの環境（make zoo と同じ：ハッシュの乱数を固定）
SEEDED = {"PYTHONHASHSEED": "0"}
# 文書の数字はテストの中で学習したモデルのもの：ソルバーの最後の桁は BLAS のスレッドで揺れる
# （LogisticRegression で相対 4e-4 を見た）。onnxruntime との 1e-5 の一致は tests/zoo が確かめる
REL_TOL = 1e-3
ABS_TOL = 1e-5
# curl は 4xx も出力する（文書は誤りの答えも示す）
PRELUDE = f"""
set -euo pipefail
{UV_SHIM}
curl() {{ command curl --max-time 30 "$@"; }}
"""


@dataclass(frozen=True)
class Request:
    """curl のブロックと、文書が示すその出力。"""

    command: str
    output: str


@dataclass(frozen=True)
class Example:
    """文書の 1 つの例。"""

    name: str
    exports: tuple[str, ...]
    serve: str
    requests: tuple[Request, ...]

    @property
    def needs_frameworks(self) -> bool:
        """`.zoo-venv` のフレームワークで書き出すか。"""
        return any(FRAMEWORK_PYTHON in block for block in self.exports)


def examples(text: str) -> Iterator[Example]:
    """文書の例を読む（形が崩れていればここで失敗する）。"""
    for marker in MARKER.finditer(text):
        ends = [
            m.start()
            for m in (MARKER.search(text, marker.end()), CHAPTER.search(text, marker.end()))
            if m
        ]
        section = text[marker.end() : min(ends, default=len(text))]
        exports: list[str] = []
        serve: list[str] = []
        requests: list[Request] = []
        fences = list(FENCE.finditer(section))
        for index, fence in enumerate(fences):
            language, body = fence.groups()
            if language != "bash":
                continue
            if "curl " in body:
                after = fences[index + 1] if index + 1 < len(fences) else None
                assert after is not None, f"{marker.group(1)}: a curl block ends the example"
                assert after.group(1) in {"json", "text"}, (
                    f"{marker.group(1)}: a curl block must be followed by its output block"
                )
                requests.append(Request(body, after.group(2)))
            elif "model-in-image serve" in body:
                serve.append(body)
            else:
                exports.append(body)
        name = marker.group(1)
        assert len(serve) == 1, f"{name}: expected one serve block, found {len(serve)}"
        assert exports, f"{name}: needs an export block"
        assert requests, f"{name}: needs a request"
        yield Example(name, tuple(exports), serve[0], tuple(requests))


ALL = list(examples(PAGE.read_text(encoding="utf-8")))


def localise(text: str, tmp: Path, port: int | None = None) -> str:
    """文書の場所をこのテストのもの（一時フォルダー・サーバーのポート・venv）にする。"""
    text = text.replace(FRAMEWORK_PYTHON, str(ZOO_VENV / "bin" / "python"))
    text = text.replace("/tmp/", f"{tmp}/")
    if port is not None:
        text = re.sub(r"(?:127\.0\.0\.1|localhost):8000", f"127.0.0.1:{port}", text)
    return text


def serve_arguments(block: str, tmp: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """`[VAR=値 ...] uv run model-in-image serve 引数` から環境変数と引数を読む。"""
    words = shlex.split(localise(block, tmp).replace("\\\n", " "))
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[:4] == ["uv", "run", "model-in-image", "serve"], words
    return env, tuple(words[4:])


def same(got: Any, want: Any, where: str = "$") -> list[str]:
    """JSON の値の違い（実数は許容差つき）。"""
    if isinstance(want, float) or isinstance(got, float):
        return [] if _close(got, want) else [f"{where}: {got!r} != {want!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        if got.keys() != want.keys():
            return [f"{where}: keys {sorted(got)} != {sorted(want)}"]
        return [d for key in want for d in same(got[key], want[key], f"{where}.{key}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: length {len(got)} != {len(want)}"]
        return [
            d
            for i, (g, w) in enumerate(zip(got, want, strict=True))
            for d in same(g, w, f"{where}[{i}]")
        ]
    return [] if got == want and type(got) is type(want) else [f"{where}: {got!r} != {want!r}"]


def _close(got: Any, want: Any) -> bool:
    numbers = (int, float)
    if isinstance(got, bool) or not isinstance(got, numbers) or not isinstance(want, numbers):
        return False
    return math.isclose(got, want, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def differences(got: str, want: str) -> list[str]:
    """出力と文書の違い：全体が JSON なら値で、そうでなければ行ごとに（JSON の行は値で）。"""
    try:
        return same(json.loads(got), json.loads(want))
    except json.JSONDecodeError:
        pass
    got_lines, want_lines = got.strip("\n").splitlines(), want.strip("\n").splitlines()
    if len(got_lines) != len(want_lines):
        return [f"{len(got_lines)} lines, the page shows {len(want_lines)}"]
    found = []
    for number, (g, w) in enumerate(zip(got_lines, want_lines, strict=True), 1):
        try:
            found += same(json.loads(g), json.loads(w), f"line {number}")
        except json.JSONDecodeError:
            if g != w:
                found.append(f"line {number}: {g!r} != {w!r}")
    return found


@pytest.fixture(scope="module")
def frameworks() -> Path:
    """`.zoo-venv` の python（無ければスキップ、MII_REQUIRE_ZOO=1 なら失敗）。"""
    python = ZOO_VENV / "bin" / "python"
    if not python.exists():
        unavailable(f"no framework venv at {ZOO_VENV} (make zoo creates it)", REQUIRE_ZOO)
    return python


def test_the_page_has_every_kind() -> None:
    names = [example.name for example in ALL]
    assert len(names) == len(set(names)), names
    assert len(ALL) >= 11


@pytest.mark.parametrize("example", ALL, ids=[example.name for example in ALL])
def test_byom_example_answers_as_written(
    example: Example, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if example.needs_frameworks:
        request.getfixturevalue("frameworks")
    for block in example.exports:
        run_bash(PRELUDE + localise(block, tmp_path), BLOCK_TIMEOUT, SEEDED)
    env, args = serve_arguments(example.serve, tmp_path)
    with running_server(tmp_path, {"LABEL_FILEPATH": "", **env}, args=args) as server:
        for call in example.requests:
            got = run_bash(PRELUDE + localise(call.command, tmp_path, server.port), BLOCK_TIMEOUT)
            found = differences(got, call.output)
            assert not found, (
                f"{example.name}: the answer differs from the page\n--- command\n{call.command}"
                f"\n--- the server's output (verbatim)\n{got}\n--- the page\n{call.output}"
                "\n--- differences\n" + "\n".join(found[:20]) + _server_log(server)
            )


def _server_log(server: LiveServer) -> str:
    return f"\n--- server log (tail)\n{server.log()[-2000:]}"
