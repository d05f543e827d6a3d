"""Griffe extension used by the docs build only (it is not part of the package).

The package's docstrings are written in plain reST-flavoured prose: ``:class:`X``` roles,
doctest examples and pydantic ``Field(description=...)`` texts. mkdocstrings renders Markdown,
so before rendering this extension:

* turns Sphinx roles (``:class:``, ``:meth:``, ``:func:``, ``:mod:``, ``:exc:``, ``:attr:``,
  ``:data:``, ``:obj:``) into optional autorefs cross-references: a link when the target is on
  the site, plain code when it is not (never a warning);
* wraps doctest blocks (lines starting with ``>>>``) in ``pycon`` code fences, without their
  ``# doctest:`` directives;
* gives pydantic fields that have no docstring the ``description=`` of their ``Field(...)``.
"""

from __future__ import annotations

import ast
import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|meth|func|mod|exc|attr|data|obj):`(~?)([^`<>]+?)`")
_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")


def _target(obj: griffe.Object, name: str) -> str:
    """The full path ``name`` stands for, seen from ``obj``."""
    if name.startswith("expertprompting"):
        return name
    head, _, rest = name.partition(".")
    try:
        resolved = obj.resolve(head)
    except Exception:  # unknown name: keep it as written
        return name
    return f"{resolved}.{rest}" if rest else resolved


def _roles(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match[str]) -> str:
        _role, short, name = match.groups()
        target = _target(obj, name)
        title = name.rsplit(".", 1)[-1] if short else name
        return (
            f'<autoref identifier="{html.escape(target)}" optional>'
            f"<code>{html.escape(title)}</code></autoref>"
        )

    return _ROLE.sub(link, text)


def _doctests(text: str) -> str:
    out: list[str] = []
    block: list[str] = []
    indent = ""

    def flush() -> None:
        if block:
            out.extend([f"{indent}```pycon", *block, f"{indent}```"])
            block.clear()

    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(">>>") or (block and stripped):
            if not block:
                indent = line[: len(line) - len(stripped)]
            block.append(_DIRECTIVE.sub("", line))
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


def _field_description(value: Any) -> str | None:
    if not isinstance(value, griffe.ExprCall) or str(value.function) != "Field":
        return None
    for argument in value.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "description":
            try:
                text = ast.literal_eval(str(argument.value))
            except (ValueError, SyntaxError):
                return None
            return text if isinstance(text, str) else None
    return None


class DocstringsForMarkdown(griffe.Extension):
    """Rewrite the package's docstrings for Markdown rendering (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    # The name of the same hook in griffe 1.x.
    on_package_loaded = on_package

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen or obj.extra["docs_ext"].get("done"):
            return
        seen.add(obj.path)
        obj.extra["docs_ext"]["done"] = True
        if obj.docstring is None and obj.is_attribute:
            description = _field_description(getattr(obj, "value", None))
            if description:
                obj.docstring = griffe.Docstring(description, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = _doctests(_roles(obj, obj.docstring.value))
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]
