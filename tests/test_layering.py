"""Dependency direction: model/ is framework-free, the backend has no Dash/plotly, figures
are pure. Walks every import statement (top-level and inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RULES = {
    "model": {"dashboard", "dash", "dash_ag_grid", "plotly", "diskcache", "umap", "scanpy"},
    "dashboard/backend": {"dash", "dash_ag_grid", "plotly", "dashboard.pages", "dashboard.app"},
    "dashboard/figures.py": {"dash", "dashboard.backend", "model"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _files(target: str) -> list[Path]:
    p = ROOT / target
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


@pytest.mark.parametrize("target", sorted(RULES))
def test_forbidden_imports(target: str) -> None:
    files = _files(target)
    assert files, f"nothing found at {target}"
    bad = []
    for f in files:
        for name in _imports(f):
            if any(name == b or name.startswith(b + ".") for b in RULES[target]):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)
