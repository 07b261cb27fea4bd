"""The package's layout holds: folders by role, bottom to top, and no import cycle.

docs/architecture.md draws the floors. Every import of a module is read, those inside
functions included (``TYPE_CHECKING`` blocks excluded: they never run), and an import from a
lower floor to a higher one, or a cycle between modules, fails here. Every module must also
import alone in a fresh interpreter, so that none relies on another having been imported first.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_racecheck"

FLOORS = [
    "linux",
    "wire",
    "sql",
    "clock",
    "results",
    "instrument",
    "backends",
    "statements",
    "explore",
    "policies",
    "runs",
    "processes",
    "controller",
    "plugin",
]
"""The package's folders, bottom first: a module may import from its own floor or below."""

MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 60

LONGER_MODULES = {
    "explore/dpor.py": "the source-set DPOR is one state machine (docs/architecture.md)",
    "backends/postgres/provider.py": "one class, one server per pytest process",
}
"""Modules allowed over MAX_MODULE_LINES, each for the reason docs/architecture.md gives."""


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(name: str) -> int | None:
    """The floor of a module; None for the package's own ``__init__`` (the public face)."""
    parts = name.split(".")
    if len(parts) < 2:
        return None
    return FLOORS.index(parts[1])


class _Imports(ast.NodeVisitor):
    """Every import a module runs, in functions too, but not under ``if TYPE_CHECKING:``."""

    def __init__(self, name: str, is_package: bool, known: frozenset[str] = frozenset()) -> None:
        self.name, self.is_package, self.known = name, is_package, known
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(a.name for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            here = self.name.split(".")
            if not self.is_package:
                here = here[:-1]
            here = here[: len(here) - node.level + 1]
            base = ".".join([*here, base]) if base else ".".join(here)
        # ``from pkg import module`` imports the module; pkg/__init__ runs first either way,
        # and is counted only where a name is taken from it.
        named = [f"{base}.{a.name}" for a in node.names]
        self.found.update(named)
        self.found.add(base if not all(self.modules_known(n) for n in named) else "")

    def modules_known(self, name: str) -> bool:
        return name in self.known


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    visitor = _Imports(name, path.name == "__init__.py", frozenset(known))
    visitor.visit(ast.parse(path.read_text()))
    return {m for m in visitor.found if m in known and m != name}


def test_every_folder_is_a_floor() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(FLOORS)


def test_no_import_goes_up_a_floor() -> None:
    known = modules()
    upward = []
    for name, path in known.items():
        mine = floor_of(name)
        if mine is None:
            continue
        for target in imports_of(name, path, known):
            theirs = floor_of(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{name} ({FLOORS[mine]}) imports {target} ({FLOORS[theirs]})")
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    # A package's __init__ is imported with each of its modules: an edge to it is real.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # The public face (pytest_racecheck/__init__) loads names lazily, on first use only.
    cycles = [c for c in cycles if "pytest_racecheck" not in c]
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A made-up upward import and cycle are found: the readers above are not blind."""
    (tmp_path / "a.py").write_text("def f():\n    from pkg.plugin import b\n")
    visitor = _Imports("pkg.linux.a", False)
    visitor.visit(ast.parse((tmp_path / "a.py").read_text()))
    assert "pkg.plugin.b" in visitor.found
    hidden = _Imports("pkg.linux.a", False)
    hidden.visit(ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"))
    assert "x" not in hidden.found


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_imports_alone(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for path in modules().values():
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES and rel not in LONGER_MODULES:
            too_long.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in LONGER_FUNCTIONS:
                    too_long.append(f"{rel}:{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


LONGER_FUNCTIONS: dict[str, str] = {}
"""Functions allowed over MAX_FUNCTION_LINES, each for the reason docs/architecture.md gives."""
