"""Prompt templates: Jinja files in the package, or the user's own, checked when loaded.

Every template renders in a sandboxed Jinja environment with ``StrictUndefined``: a user's
template cannot reach Python internals, and a misspelt variable is an error rather than an empty
string. Instructions and inputs are always *data* handed to a template, never template source,
so an instruction containing ``{{ 7*7 }}`` reaches the model exactly as typed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateError

__all__ = ["PromptTemplate", "TemplateKind", "TemplateSource", "load_template"]

TemplateKind = Literal[
    "identity",
    "identity_system",
    "identity_turn",
    "answer",
    "static",
    "vanilla",
    "judge",
    "experts",
    "aggregate",
    "strategy",
]
TemplateSource = str | os.PathLike[str]

_REQUIRED: dict[TemplateKind, frozenset[str]] = {
    "identity": frozenset({"instruction"}),
    "identity_system": frozenset(),
    "identity_turn": frozenset({"instruction"}),
    "answer": frozenset({"identity", "instruction"}),
    "static": frozenset({"instruction"}),
    "vanilla": frozenset({"instruction"}),
    "judge": frozenset({"question", "answer_1", "answer_2"}),
    "experts": frozenset({"instruction", "n"}),
    "aggregate": frozenset({"instruction", "answers"}),
    "strategy": frozenset({"instruction"}),
}
_ALLOWED: dict[TemplateKind, frozenset[str]] = {
    "identity": frozenset({"instruction", "input", "exemplars"}),
    "identity_system": frozenset(),
    "identity_turn": frozenset({"instruction", "input"}),
    "answer": frozenset({"identity", "instruction", "input"}),
    "static": frozenset({"instruction", "input"}),
    "vanilla": frozenset({"instruction", "input"}),
    "judge": frozenset({"question", "answer_1", "answer_2"}),
    "experts": frozenset({"instruction", "input", "n"}),
    "aggregate": frozenset({"instruction", "input", "answers"}),
    "strategy": frozenset({"instruction", "input"}),
}

_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled, checked template for one step of the method."""

    kind: TemplateKind
    source: str
    origin: str
    variables: frozenset[str]
    compiled: jinja2.Template

    def render(self, **context: Any) -> str:
        """Render with ``context``; the result is stripped of outer white space."""
        if context.get("input") and "input" not in self.variables:
            raise TemplateError(
                f"The {self.kind} template ({self.origin}) does not use {{{{ input }}}}, but this "
                "item has an input that would be lost. Add {{ input }} to the template."
            )
        try:
            return self.compiled.render(**context).strip()
        except jinja2.TemplateError as exc:
            raise TemplateError(
                f"The {self.kind} template ({self.origin}) failed to render: {exc}. "
                "Fix the template; variables available: "
                f"{', '.join(sorted(_ALLOWED[self.kind]))}."
            ) from exc


def _read_source(kind: TemplateKind, spec: TemplateSource | None) -> tuple[str, str]:
    if spec is None:
        text = (
            resources.files("expertprompting")
            .joinpath(f"templates/{kind}.jinja")
            .read_text(encoding="utf-8")
        )
        return text, f"built-in {kind}.jinja"
    if isinstance(spec, os.PathLike):
        path = Path(spec)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise TemplateError(f"Cannot read the {kind} template file {path}: {exc}.") from exc
    if "{{" not in spec and "{%" not in spec and os.path.isfile(spec):
        return Path(spec).read_text(encoding="utf-8"), spec
    return spec, "template string"


def load_template(kind: TemplateKind, spec: TemplateSource | None = None) -> PromptTemplate:
    """Compile and check the ``kind`` template: the built-in one, a file path, or a source string.

    Fails now, not at the first request, when the template does not compile, misses a
    variable the step needs, or uses one the step does not provide.
    """
    source, origin = _read_source(kind, spec)
    try:
        variables = frozenset(meta.find_undeclared_variables(_ENV.parse(source)))
        compiled = _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"The {kind} template ({origin}) is not valid Jinja: {exc.message} (line {exc.lineno})."
        ) from exc
    missing = _REQUIRED[kind] - variables
    if missing:
        hint = (
            " If you meant a file path, no such file exists." if origin == "template string" else ""
        )
        raise TemplateError(
            f"The {kind} template ({origin}) never uses "
            + ", ".join(f"{{{{ {name} }}}}" for name in sorted(missing))
            + f"; the model would not see it. Add it to the template.{hint}"
        )
    unknown = variables - _ALLOWED[kind]
    if unknown:
        raise TemplateError(
            f"The {kind} template ({origin}) uses unknown variable(s) "
            f"{', '.join(sorted(unknown))}; "
            f"available: {', '.join(sorted(_ALLOWED[kind]))}."
        )
    return PromptTemplate(kind, source, origin, variables, compiled)
