"""ソースの形：モジュールは 400 行以内（生成物を除く）、設計メモの表に全モジュールがある。"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "model_in_image"
MODULES = sorted(path for path in PACKAGE.rglob("*.py") if "_generated" not in path.parts)
MAX_LINES = 400


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_at_most_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_design_notes_name_every_module() -> None:
    table = (REPO_ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    for path in MODULES:
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" or relative.parent.name == "_generated":
            continue
        named = (
            f"`{relative}`" in table
            or f"`{relative.parent}/`" in table
            or f"`{relative.stem}.py`" in table
        )
        assert named, f"docs/design.md does not describe {relative}"


def _module_imports(path: Path, package: str) -> set[str]:
    """モジュールの直下（TYPE_CHECKING の中も）で読む同じパッケージのモジュール。"""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = list(tree.body)
    nodes += [inner for node in tree.body if isinstance(node, ast.If) for inner in node.body]
    found: set[str] = set()
    for node in nodes:  # 関数の中の遅延 import は循環にならないので見ない
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == package:
                found.update(f"{package}.{alias.name}" for alias in node.names)
            elif node.module.startswith(package + "."):
                found.add(node.module)
    return found


def test_benchmark_modules_import_without_cycles() -> None:
    package = REPO_ROOT / "benchmarks"
    graph = {
        f"benchmarks.{path.stem}": _module_imports(path, "benchmarks")
        for path in package.glob("*.py")
    }

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, " -> ".join((*stack, module))
        for imported in graph.get(module, set()):
            visit(imported, (*stack, module))

    for module in graph:
        visit(module, ())


def test_codecs_do_not_import_the_api_layer() -> None:
    """codecs はワイヤー ⇄ 配列の変換だけ：api（上の層）を import しない。"""
    for path in (PACKAGE / "codecs").glob("*.py"):
        imports = _module_imports(path, "model_in_image")
        upward = sorted(name for name in imports if name.startswith("model_in_image.api"))
        assert upward == [], f"codecs/{path.name} imports {upward}"
