"""No module of the package touches another module's private names.

A private name (one leading underscore) belongs to the module that defines it: its functions,
classes, methods and attributes. Another module reaching for it (``prompter._run_driver()``,
``from .core import _usage``) ties the two together behind the public API's back, which is how
the design got hard to see before. This test reads every module's source and fails on such uses.
"""

from __future__ import annotations

import ast
from pathlib import Path

import expertprompting

PACKAGE = Path(expertprompting.__file__).parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(PACKAGE)): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _defined(tree: ast.Module) -> set[str]:
    """The private names a module defines: functions, classes, attributes, module globals."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if _private(name)}


def _uses(tree: ast.Module) -> list[tuple[int, str]]:
    """Private attribute reads on anything but ``self``/``cls``, and private names imported."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}):
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.extend((node.lineno, a.name) for a in node.names if _private(a.name))
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    modules = _modules()
    defined = {name: _defined(tree) for name, tree in modules.items()}
    offences = []
    for name, tree in modules.items():
        others = set().union(*(d for other, d in defined.items() if other != name))
        for line, attr in _uses(tree):
            if attr in others and attr not in defined[name]:
                offences.append(f"{name}:{line}: {attr}")
    assert offences == []


def test_the_check_catches_a_private_call_across_modules() -> None:
    user = ast.parse("def f(p):\n    return p._run_driver()\n")
    owner = ast.parse("class P:\n    def _run_driver(self):\n        pass\n")
    assert _uses(user) == [(2, "_run_driver")]
    assert "_run_driver" in _defined(owner)
    assert "_run_driver" not in _defined(user)
    imported = ast.parse("from .core import _usage\n")
    assert _uses(imported) == [(1, "_usage")]
