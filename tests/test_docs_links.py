"""README.md と docs/*.md：README の長さ、リンクの行き先、章へのリンク、make のターゲット。"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CHAPTERS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *CHAPTERS]
README_MAX_LINES = 300

# コードブロック（リスト内の字下げしたものも含む）とインラインコード
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# make の呼び出し：同じコマンドの語のうち、オプションと変数の代入を除いたものがターゲット
MAKE_WORD = re.compile(r"(?<![\w./$-])make(?=[ \t])")
WORD_END = re.compile(r"[）`]")
SHELL_COMMENT = re.compile(r"(?:^|[ \t])#.*$", re.M)
MAKE_OPTIONS_WITH_VALUE = frozenset({"-C", "-f", "-I", "-o", "-W"})
# 親の make（make test）から受け継ぐと -p の出力が変わる変数
MAKE_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def prose(text: str) -> str:
    """コードを除いた本文（リンクと見出しはここだけから拾う）。"""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub と同じ見出しのアンカー（小文字、語の文字・ハイフン・空白だけ残し、空白を - に）。"""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """ページの見出しのアンカー（同じ見出しの 2 つ目以降は -1, -2 が付く）。"""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def link_targets(page: Path) -> list[str]:
    """ページの本文にあるリンク先（外部 URL を除く）。"""
    found = LINK.findall(prose(page.read_text(encoding="utf-8")))
    return [target for target in found if not SCHEME.match(target)]


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """行き先の無い相対リンク（ファイル・リポジトリの外・見出し）。"""
    problems = []
    for target in link_targets(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif fragment and (dest.suffix != ".md" or unquote(fragment) not in anchors(dest)):
            problems.append(f"{target}: no heading #{unquote(fragment)} in {dest.name}")
    return problems


def make_calls(text: str) -> set[str]:
    """コードブロックとインラインコードの make に渡したターゲット。"""
    blocks = FENCE.findall(text)
    code = "\n".join([*blocks, *INLINE_CODE.findall(FENCE.sub("", text))])
    code = SHELL_COMMENT.sub("", re.sub(r"\\\n\s*", " ", code))
    targets: set[str] = set()
    for match in MAKE_WORD.finditer(code):
        targets |= _make_arguments(code[match.end() :].split("\n", 1)[0])
    return targets


def _make_arguments(args: str) -> set[str]:
    """make の引数（シェルの区切り・閉じ括弧まで）からターゲットを拾う。"""
    lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # 閉じていない引用符：空白で区切る
        tokens = args.split()
    targets: set[str] = set()
    skip_value = False
    for token in tokens:
        word = WORD_END.split(token, 1)[0]
        if not word or set(word) <= set(lexer.punctuation_chars):
            break
        if skip_value:
            skip_value = False
        elif word in MAKE_OPTIONS_WITH_VALUE:
            skip_value = True
        elif not word.startswith("-") and "=" not in word:
            targets.add(word)
        if word != token:
            break
    return targets


def make_targets(root: Path = ROOT) -> set[str]:
    """make のデータベース（Makefile と読み込んだ mk/*.mk）にあるターゲット。"""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV}
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(root),
            "--print-data-base",
            "--question",
            "--no-builtin-rules",
            "--no-builtin-variables",
            "help",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    files = done.stdout.partition("\n# Files\n")[2].partition("\n# files hash-table stats")[0]
    assert files, f"no database in make -p output: {done.stderr[-2000:]}"
    targets: set[str] = set()
    not_a_target = False
    for line in files.splitlines():
        if line == "# Not a target:":
            not_a_target = True
            continue
        match = re.match(r"([^#\s:][^:\s]*):(?!=)", line)
        if match:
            if not not_a_target:
                targets.add(match.group(1))
            not_a_target = False
    return targets


@pytest.fixture(scope="module")
def defined_targets() -> set[str]:
    """リポジトリの make のターゲット。"""
    return make_targets()


def test_readme_is_short() -> None:
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    assert link_problems(page) == []


def test_readme_links_every_chapter() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in link_targets(README)}
    assert CHAPTERS
    assert [c.name for c in CHAPTERS if c not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_make_targets_in_code_exist(page: Path, defined_targets: set[str]) -> None:
    used = make_calls(page.read_text(encoding="utf-8"))
    assert used <= defined_targets, sorted(used - defined_targets)


def test_readme_documents_the_two_commands(defined_targets: set[str]) -> None:
    assert {"run", "test"} <= make_calls(README.read_text(encoding="utf-8")) & defined_targets


def test_checks_report_broken_links(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text(
        "# 見出し：その 1（`x`）\n\n## 見出し：その 1（`x`）\n\n"
        "```bash\n# コードの中は見出しでない\n```\n",
        encoding="utf-8",
    )
    page = root / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#見出しその-1x) [ok](docs/a.md#見出しその-1x-1)"
        " [ok](https://example.invalid/x) `[code](missing.md)`\n"
        "[gone](docs/b.md) [bad](docs/a.md#コードの中は見出しでない)"
        " [up](../x.md) [self](#nothing)\n",
        encoding="utf-8",
    )
    (tmp_path / "x.md").touch()
    assert link_problems(page, root) == [
        "docs/b.md: no such file",
        "docs/a.md#コードの中は見出しでない: no heading #コードの中は見出しでない in a.md",
        "../x.md: outside the repository",
        "#nothing: no heading #nothing in README.md",
    ]


def test_make_calls_are_found_in_code_only() -> None:
    text = (
        "make prose\n\n```bash\nmake image BASE_IMAGE=x  # make comment\n"
        "make -C dir deploy \\\n  OVERLAY=production\n(cd x && make k8s-render)\n"
        'make bench BENCH_ARGS="--variants a,b --workers 2" && make -n help; echo\n'
        "学習（make train）\n```\n"
        "`make loadtest URL=...` と（`make`）と cmake build\n"
    )
    expected = {"image", "deploy", "k8s-render", "bench", "help", "train", "loadtest"}
    assert make_calls(text) == expected


def test_make_database_lists_targets_and_not_files(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text(
        "X := 1\nhelp:\n\t@true\nbuild: Makefile\n\t@true\n-include mk/*.mk\n", encoding="utf-8"
    )
    (tmp_path / "mk").mkdir()
    (tmp_path / "mk" / "extra.mk").write_text("extra:\n\t@true\n", encoding="utf-8")
    targets = make_targets(tmp_path)
    assert {"help", "build", "extra"} <= targets
    assert not {"Makefile", "X", "mk/extra.mk"} & targets
