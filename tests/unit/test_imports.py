"""Every project-internal import resolves, those inside functions too: a module moved (issue 16
regrouped `streams/`) must not leave an import that fails only when its function runs (the
Faust ceiling benchmark's child did)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "models", "bench", "tests")


def _internal_imports() -> list[tuple[str, int, str, str | None]]:
    """(file, line, module, name or None) of each import of a project package."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "out" in path.relative_to(ROOT).parts:  # benchmark worktrees of other revisions
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                        node.module.split(".")[0] in PACKAGES:
                    found += [(str(path.relative_to(ROOT)), node.lineno, node.module, a.name)
                              for a in node.names]
                elif isinstance(node, ast.Import):
                    found += [(str(path.relative_to(ROOT)), node.lineno, a.name, None)
                              for a in node.names if a.name.split(".")[0] in PACKAGES]
    return found


def test_every_internal_import_resolves():
    imports = _internal_imports()
    assert len(imports) > 300  # the walk found the project's imports
    broken = []
    for path, line, module, name in imports:
        try:
            imported = importlib.import_module(module)
            if name is not None and name != "*" and not hasattr(imported, name):
                importlib.import_module(f"{module}.{name}")  # a submodule not imported yet
        except ImportError as exc:
            broken.append(f"{path}:{line}: {module} {name or ''}: {exc}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("path", ["bench/faust_ceiling.py"])
def test_the_walk_sees_imports_inside_functions(path):
    assert any(p == path and m == "streams.runtime" and n == "faust_consumer"
               for p, _, m, n in _internal_imports())
