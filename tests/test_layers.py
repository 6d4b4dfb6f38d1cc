"""The house rules that a walk over the package's source can check: imports only go down the layer
order that docs/architecture.md states (its ```layers block, read here), no import cycle between
modules (function-level imports included), no module over 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sctgm"
ARCHITECTURE_MD = PACKAGE.parent / "docs" / "architecture.md"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The sctgm modules ``name`` imports anywhere in its source (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        found.update(t for t in targets if t in mods and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _layers() -> dict[str, int]:
    """docs/architecture.md's ```layers block: one layer a line, lowest first; each word a top-level
    module or package of sctgm (``__init__`` is the package's public API)."""
    block = re.search(r"```layers\n(.*?)```", ARCHITECTURE_MD.read_text(), re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return {word: i for i, line in enumerate(block.group(1).splitlines()) for word in line.split()}


def _top(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_module_has_a_layer() -> None:
    layers = _layers()
    missing = sorted({_top(m) for m in _modules()} - set(layers))
    assert not missing, f"add these to docs/architecture.md's layers block: {missing}"


def test_imports_only_go_down() -> None:
    layers = _layers()
    upward = sorted((a, b) for a, deps in _graph().items() for b in deps
                    if layers[_top(b)] > layers[_top(a)])
    assert not upward, f"imports up a layer (docs/architecture.md): {upward}"


def test_no_import_cycle() -> None:
    graph = _graph()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join(path[path.index(nxt):] + [node, nxt])}")
            if nxt not in seen:
                visit(nxt, path + [node])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])


def test_the_walk_sees_function_level_imports() -> None:
    """The walker is what the two tests above rely on: a function-level import counts."""
    graph = _graph()
    assert "sctgm.model.install" in graph["sctgm.segment.pipeline"]  # imported inside Segmenter.from_name
    assert "sctgm.networks" in graph["sctgm.model.install"]  # imported inside _from_path


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"
