"""Dependency direction: model/ is framework-free, the backend has no Dash/plotly and knows
nothing above it, the view layer (dashboard/views/) no Dash or plotly, figures are pure, and
pages reach the backend only through the view layer. Walks every import statement
(top-level and inside functions); imports under ``if TYPE_CHECKING:`` are annotations only
and count only for the forbidden lists, not for the pages' allowed list or for cycles."""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What each place must not import (a module or any module under it).
RULES = {
    "model": {"dashboard", "dash", "dash_ag_grid", "plotly", "diskcache", "umap", "scanpy"},
    "dashboard/backend": {
        "dash",
        "dash_ag_grid",
        "plotly",
        "dashboard.pages",
        "dashboard.app",
        "dashboard.views",
        "dashboard.figures",
        "dashboard.components",
        "dashboard.layout",
        "dashboard.state",
        "dashboard.queries",
    },
    "dashboard/views": {
        "dash",
        "dash_ag_grid",
        "plotly",
        "dashboard.pages",
        "dashboard.app",
        "dashboard.figures",
        "dashboard.components",
        "dashboard.layout",
    },
    "dashboard/figures.py": {"dash", "dashboard.backend", "dashboard.views", "model"},
}
#: The only first-party modules a page may import at run time (and Dash, any library).
PAGE_IMPORTS = (
    "dashboard.views",
    "dashboard.figures",
    "dashboard.components",
    "dashboard.ids",
    "dashboard.pages",
)
#: What pages never touch on the service (its methods do the work).
SERVICE_INTERNALS = {"jobs", "cache"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _imports(path: Path) -> tuple[tuple[str, bool, bool], ...]:
    """``(module, type-checking only, inside a function)`` of every import in ``path``
    (``from a import b`` gives ``a.b``: the submodule when there is one)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[str, bool, bool]] = []
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)

    def visit(node: ast.AST, typing_only: bool, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_one(sub, True, in_function)
                for sub in child.orelse:
                    visit_one(sub, typing_only, in_function)
            else:
                visit_one(child, typing_only, in_function)

    def visit_one(node: ast.AST, typing_only: bool, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend((a.name, typing_only, in_function) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.extend((f"{node.module}.{a.name}", typing_only, in_function) for a in node.names)
        else:
            visit(node, typing_only, in_function or isinstance(node, functions))

    visit(tree, False, False)
    return tuple(out)


def _under(name: str, prefixes: set[str] | tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _files(target: str) -> list[Path]:
    p = ROOT / target
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


@pytest.mark.parametrize("target", sorted(RULES))
def test_forbidden_imports(target: str) -> None:
    files = _files(target)
    assert files, f"nothing found at {target}"
    bad = []
    for f in files:
        for name, _, _ in _imports(f):
            if _under(name, RULES[target]):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_pages_reach_the_backend_only_through_the_views() -> None:
    """A page imports, at run time, only the view layer, figures, components, ids, other
    page modules (``_shared``, ``_cells``, ``_jobs``, ...), Dash and libraries."""
    bad = []
    for f in _files("dashboard/pages"):
        for name, typing_only, _ in _imports(f):
            first_party = _under(name, ("dashboard", "model"))
            if first_party and not typing_only and not _under(name, PAGE_IMPORTS):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_pages_use_the_services_methods_not_its_internals() -> None:
    """No ``service.jobs`` or ``service.cache`` (nor ``state.service.jobs``) in a page."""
    bad = []
    for f in _files("dashboard/pages"):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if not isinstance(node, ast.Attribute) or node.attr not in SERVICE_INTERNALS:
                continue
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if name == "service":
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno} uses service.{node.attr}")
    assert not bad, "\n".join(bad)


def _graph(package: str) -> dict[str, set[str]]:
    """Run-time imports among a package's modules (a package: its ``__init__``)."""
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges = set()
        for name, typing_only, _ in _imports(path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module and not typing_only:
                edges.add(name)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each import cycle (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


@pytest.mark.parametrize("package", ["dashboard", "model"])
def test_no_import_cycles(package: str) -> None:
    """A package's modules import each other in one direction only (a cycle would make
    which layer depends on which a matter of import order). In ``model/`` every own import
    is at the top of its file (:func:`test_model_imports_its_own_modules_at_the_top`), so
    the graph sees them all."""
    cycles = _cycles(_graph(package))
    assert not cycles, f"import cycles in {package}/: " + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_graph_sees_the_model_modules() -> None:
    graph = _graph("model")
    assert {"model", "model.totalvi", "model.data", "model.train"} <= set(graph)
    assert "model.data" in graph["model.totalvi"]


def test_model_imports_its_own_modules_at_the_top() -> None:
    """An import of a ``model`` module inside a function would hide a cycle until the
    function runs, so ``model/`` has none (imports under ``if TYPE_CHECKING:`` never run)."""
    late = [
        f"{f.relative_to(ROOT)} imports {name} inside a function"
        for f in _files("model")
        for name, typing_only, in_function in _imports(f)
        if in_function and not typing_only and _under(name, ("model",))
    ]
    assert not late, "\n".join(late)
