"""The model package imports its own modules at the top of each file and has no import cycle.

Every ``model/*.py`` is parsed (not imported): an import of a ``model`` module inside a
function would hide a cycle until the function runs, so there must be none; imports under
``if TYPE_CHECKING:`` never run and are left out of the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "model"


def _name(path: Path) -> str:
    return "model" if path.stem == "__init__" else f"model.{path.stem}"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Own (``model``) imports of one file: ``(module, line, inside a function)``."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int, bool]] = []
        self._depth = 0

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, module: str, node: ast.stmt) -> None:
        if module == "model" or module.startswith("model."):
            self.found.append((module, node.lineno, self._depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: resolve against the package
            module = ".".join(["model", *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        self._add(module, node)
        if module == "model":  # ``from model import data``: the submodule too
            for alias in node.names:
                if (MODEL / f"{alias.name}.py").is_file():
                    self._add(f"model.{alias.name}", node)


def _graph() -> dict[str, list[tuple[str, int, bool]]]:
    graph = {}
    for path in sorted(MODEL.glob("*.py")):
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[_name(path)] = visitor.found
    return graph


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (depth-first search)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            found.append([*stack[stack.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, [*stack, node])
        done.add(node)

    for start in sorted(edges):
        visit(start, [])
    return found


def test_graph_sees_the_model_modules() -> None:
    graph = _graph()
    assert {"model", "model.totalvi", "model.data", "model.train"} <= set(graph)
    assert any(m == "model.data" for m, _, _ in graph["model.totalvi"])


def test_model_imports_have_no_cycle() -> None:
    graph = _graph()
    edges = {
        src: {m for m, _, _ in found if m in graph and m != src} for src, found in graph.items()
    }
    cycles = _cycles(edges)
    assert not cycles, "import cycles in model/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_own_modules_are_imported_at_the_top() -> None:
    late = [
        f"{src.replace('.', '/')}.py:{line} imports {module} inside a function"
        for src, found in _graph().items()
        for module, line, in_function in found
        if in_function
    ]
    assert not late, "\n".join(late)
