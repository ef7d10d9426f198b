"""No import cycle in ``harness/``: the modules' imports, module level and inside functions
(a lazy import hides a cycle, it does not remove it), form a graph without cycles. Imports
under ``if TYPE_CHECKING:`` are for the type checker only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _module(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str, known: set[str]) -> set[str]:
    """The harness modules ``source`` (the text of ``module``) imports at run time."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub``: the submodule (pkg is initialised already, as for any
            # submodule); ``from pkg import name``: what pkg defines, pkg itself
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found.update(subs & known)
            if not subs <= known:
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return {m for m in found if m in known and m != module}


def graph(root: Path = HARNESS) -> dict[str, set[str]]:
    files = {_module(p): p for p in root.rglob("*.py")}
    known = set(files)
    return {m: imports(p.read_text("utf-8"), m, known) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return groups


def test_no_import_cycle_in_the_harness() -> None:
    found = cycles(graph())
    assert found == [], "modules that import each other (directly or round a loop): " + "; ".join(
        " ↔ ".join(g) for g in found
    )


@pytest.mark.parametrize(
    ("sources", "loop"),
    [
        ({"a": "import b", "b": "def f():\n    from a import x"}, ["a", "b"]),
        ({"a": "from b import x", "b": "from c import y", "c": "import a"}, ["a", "b", "c"]),
        (
            {
                "a": "import b",
                "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a",
            },
            [],
        ),
    ],
)
def test_a_cycle_is_found_even_behind_a_lazy_import(
    sources: dict[str, str], loop: list[str]
) -> None:
    known = set(sources)
    edges = {m: imports(text, m, known) for m, text in sources.items()}
    assert cycles(edges) == ([loop] if loop else [])
