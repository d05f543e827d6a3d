"""The public API is ``expertprompting.__all__``; this file pins it.

Adding, removing or moving a public name must be a deliberate change of the list below. The
package imports its names lazily (PEP 562), so the tests also check, in fresh interpreters where
no earlier import can hide a fault, that every name still imports from the top level, and that
the names type checkers see (the ``TYPE_CHECKING`` imports) are the ones exported at run time.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import expertprompting

PUBLIC_NAMES = [
    "LOCAL_DEFAULTS",
    "AnswerStream",
    "AsyncAnswerStream",
    "BudgetExceededError",
    "CacheWarning",
    "CachedIdentity",
    "CompareResult",
    "ComparisonReport",
    "ConfigurationError",
    "DatasetItem",
    "Exemplar",
    "ExpertAnswer",
    "ExpertIdentity",
    "ExpertPrompter",
    "ExpertPromptingError",
    "ExpertPromptingWarning",
    "ExpertView",
    "FailedItem",
    "GenerateSummary",
    "IdentityCache",
    "ItemResult",
    "Judge",
    "MemoryCache",
    "ModelPrice",
    "ModelSession",
    "PairVerdict",
    "PrompterConfig",
    "RateLimitError",
    "RequestError",
    "RequestRecord",
    "ResponseError",
    "RetryError",
    "RetryPolicy",
    "RunBudget",
    "SQLiteCache",
    "Strategy",
    "TemplateError",
    "TiktokenCounter",
    "TokenBudgetError",
    "TokenCounter",
    "TooManyErrorsError",
    "UnknownModelWarning",
    "Usage",
    "Verdict",
    "__version__",
    "agenerate",
    "build_report",
    "compare",
    "count_tokens",
    "default_exemplars",
    "generate",
    "is_local_model",
    "load_exemplars",
    "parse_verdict",
    "read_items",
    "score_pair",
]

# Everything but the version string lives in a submodule.
LAZY_NAMES = [name for name in PUBLIC_NAMES if name != "__version__"]

if TYPE_CHECKING:
    # mypy checks this block (tests/ is in its files): a top-level name has its home's type, and
    # an unknown name is still an error (were the module ``__getattr__`` visible to mypy, every
    # name would pass as Any, the ignore below would be unused, and --strict would fail).
    from typing_extensions import assert_type

    from expertprompting._prompter import ExpertPrompter as HomeExpertPrompter

    assert_type(expertprompting.ExpertPrompter, type[HomeExpertPrompter])
    expertprompting.NoSuchName  # type: ignore[attr-defined]  # noqa: B018


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter, where nothing of the package is imported yet."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _own(value: object) -> bool:
    """A class or function the package defines (not a builtin it aliases)."""
    return (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__.startswith(
        "expertprompting."
    )


def test_all_is_pinned() -> None:
    assert expertprompting.__all__ == PUBLIC_NAMES
    assert len(set(PUBLIC_NAMES)) == len(PUBLIC_NAMES)  # in ruff's (isort-style) order


def test_every_lazy_name_has_a_home_module() -> None:
    assert sorted(expertprompting._EXPORTS) == sorted(LAZY_NAMES)


@pytest.mark.parametrize("name", LAZY_NAMES)
def test_name_resolves_to_the_object_in_its_home_module(name: str) -> None:
    home = importlib.import_module(f"expertprompting.{expertprompting._EXPORTS[name]}")
    value = getattr(expertprompting, name)
    assert value is getattr(home, name)
    if _own(value):
        assert value.__module__ == home.__name__  # defined there, not re-exported from elsewhere


def test_dir_lists_every_public_name() -> None:
    assert set(PUBLIC_NAMES) <= set(dir(expertprompting))


def test_unknown_name_is_an_attribute_error() -> None:
    missing = "NoSuchName"
    with pytest.raises(AttributeError, match=missing):
        getattr(expertprompting, missing)
    assert not hasattr(expertprompting, missing)


@pytest.mark.parametrize("name", LAZY_NAMES)
def test_public_classes_and_functions_have_docstrings(name: str) -> None:
    value = getattr(expertprompting, name)
    if not _own(value):
        return  # e.g. __version__, or Strategy (an alias of str)
    # The class's own docstring: inspect.getdoc would inherit one from a base class.
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
    assert doc, f"{name} has no docstring"
    assert doc.strip(), f"{name} has an empty docstring"


def test_type_checkers_see_the_exported_names() -> None:
    """The ``if TYPE_CHECKING:`` imports of ``__init__.py`` match ``_EXPORTS`` name for name."""
    source = Path(expertprompting.__file__).read_text(encoding="utf-8")
    seen: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                assert stmt.level == 1, ast.unparse(stmt)
                for alias in stmt.names:
                    assert alias.asname is None, ast.unparse(stmt)
                    seen[alias.name] = str(stmt.module)
    assert seen == expertprompting._EXPORTS


def test_star_import_and_each_name_in_a_fresh_interpreter() -> None:
    out = _fresh(
        "import expertprompting as ep\n"
        "ns = {}\n"
        "exec('from expertprompting import *', ns)\n"
        "assert sorted(n for n in ns if n != '__builtins__') == sorted(ep.__all__), ns.keys()\n"
        "for name in ep.__all__:\n"
        "    exec(f'from expertprompting import {name}', {})\n"
        "print('ok')\n"
    )
    assert out.strip() == "ok"


PUBLIC_MODULES = [
    "expertprompting.batch",
    "expertprompting.cli",
    "expertprompting.server",
    "expertprompting.testing",
]


def test_every_other_module_is_private() -> None:
    """Below the package, only the Batch API helpers, the CLI, the server and the test server
    are public."""
    package = Path(expertprompting.__file__).parent
    public = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and not any(part.startswith("_") for part in parts):
            public.add("expertprompting." + ".".join(parts))
    assert sorted(public) == PUBLIC_MODULES


def test_compare_is_the_function_whatever_loads_first() -> None:
    out = _fresh(
        "import expertprompting._evaluation.compare as home\n"
        "import expertprompting\n"
        "from expertprompting import compare\n"
        "assert compare is home.compare and expertprompting.compare is home.compare\n"
        "print(type(compare).__name__)\n"
    )
    assert out.strip() == "function"
