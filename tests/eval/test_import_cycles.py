"""No import cycles among kdsam's modules, function-level imports included: an import moved into a
function to dodge a cycle is still a cycle (it fails at the first call made mid-import), so the
shared piece belongs in a module both sides import."""

from __future__ import annotations

import ast
from pathlib import Path

import kdsam

SRC = Path(kdsam.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> set[str]:
    """The kdsam modules one import statement loads (for `from a import b`, a.b when b is a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules
    base = node.module or ""
    if node.level:
        parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{parent}.{base}" if base else parent
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names} & modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the kdsam modules it imports anywhere in its body."""
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        nodes = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
        graph[name] = set().union(*(imported(n, package, modules) for n in nodes)) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.add(frozenset(component))

    for start in sorted(graph):
        if start not in index:
            visit(start)
    return found


def test_the_graph_sees_function_level_imports_and_cycles() -> None:
    graph = import_graph()
    assert "kdsam.export.quantize" in graph["kdsam.export.onnx"]  # imported at module level
    assert "kdsam.models.loading" in graph["kdsam.commands.predict_case"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == {frozenset("abc")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_kdsam_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)
