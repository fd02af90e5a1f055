"""No import circle inside ``llmrouter``: its imports, walked with ``ast``, form no cycle.

Every import counts, wherever it stands: at module level, under ``if TYPE_CHECKING:`` and inside
functions (a lazy import still ties two modules' designs together). An edge goes to the module
named: ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``;
importing ``a.b.c`` adds no edge to the parent packages ``a`` and ``a.b``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmrouter

ROOT = Path(llmrouter.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    names: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The ``llmrouter`` modules that module ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in modules else target)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [shortest_cycle(edges, set(c), c[0]) for c in components]


def shortest_cycle(edges: dict[str, set[str]], within: set[str], start: str) -> list[str]:
    """The shortest path from ``start`` back to itself inside one component (breadth first)."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(edges[path[-1]] & within):
            if w == start:
                return [*path, start]
            if w not in seen:
                seen.add(w)
                paths.append([*path, w])
    raise AssertionError("a component without a cycle")  # pragma: no cover


def test_the_walk_sees_every_kind_of_import() -> None:
    edges = graph()
    assert "llmrouter.backends.registry" in edges["llmrouter.config"]
    assert len(edges) > 40


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(edges) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    cycles = find_cycles(graph())
    report = "\n".join(" -> ".join(c) for c in cycles)
    assert not cycles, f"import cycles in llmrouter:\n{report}"
