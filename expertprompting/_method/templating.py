"""Prompt templates: Jinja files in the package, or the user's own, checked when loaded.

Every template renders in a sandboxed Jinja environment with ``StrictUndefined``: a user's
template cannot reach Python internals, and a misspelt variable is an error rather than an empty
string. Instructions and inputs are always *data* handed to a template, never template source,
so an instruction containing ``{{ 7*7 }}`` reaches the model exactly as typed.

A user's template also renders within limits (the built-in ones, which we wrote, do not need
them): it cannot load other templates, and a render that runs longer than
:data:`TEMPLATE_TIME_LIMIT` or builds more than :data:`TEMPLATE_SIZE_LIMIT` characters beyond
the text it is given fails with a one-line :class:`TemplateError`. Python cannot interrupt a
running C call, so the limits are checked cooperatively: the compiled template checks the clock
at every loop iteration, call, filter and operator, and every value a template builds is
measured as it is made; an operation that could multiply sizes in one step (``'a' * n``,
``s.replace(a, b)``, ``'%09999d'``, ``indent(n)``...) is sized *before* it runs.
"""

from __future__ import annotations

import os
import re
import string
import sys
import time
import types
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import do_sum, make_attrgetter
from jinja2.runtime import LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum, pass_context, pass_environment
from jinja2.visitor import NodeTransformer

from .errors import TemplateError

__all__ = [
    "TEMPLATE_NESTING_LIMIT",
    "TEMPLATE_SIZE_LIMIT",
    "TEMPLATE_TIME_LIMIT",
    "PromptTemplate",
    "TemplateKind",
    "TemplateSource",
    "load_template",
]

TEMPLATE_TIME_LIMIT = 1.0
"""Seconds one render of a user's template may take (ours take well under a millisecond)."""

TEMPLATE_SIZE_LIMIT = 1_000_000
"""Characters a user's template may build beyond the text it is given: its rendered prompt, and
any one value it makes on the way, may hold this many characters plus the size of its inputs
(instruction, input, identity, exemplars...). Also the longest template source accepted."""

TEMPLATE_NESTING_LIMIT = 100
"""Levels a value a user's template builds may nest (lists in lists...). Deeper values can crash
Python itself (hashing a tuple nested 100,000 deep overflows the C stack)."""

_INT_BITS_LIMIT = 65_536
"""Bits of a whole number ``*`` and ``**`` may produce (about 19,700 digits, already more than
Python will print)."""

_WRAP_WORK_LIMIT = 5_000_000_000
"""Characters ``wordwrap`` may copy while breaking long words (a few tenths of a second)."""

TemplateKind = Literal[
    "identity",
    "identity_system",
    "identity_turn",
    "answer",
    "static",
    "vanilla",
    "judge",
    "judge_reference",
    "judge_multiturn",
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
    "judge_reference": frozenset({"question", "answer_1", "answer_2", "reference"}),
    "judge_multiturn": frozenset({"turns", "answers_1", "answers_2"}),
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
    "judge_reference": frozenset({"question", "answer_1", "answer_2", "reference"}),
    "judge_multiturn": frozenset({"turns", "answers_1", "answers_2", "references"}),
    "experts": frozenset({"instruction", "input", "n"}),
    "aggregate": frozenset({"instruction", "input", "answers"}),
    "strategy": frozenset({"instruction", "input"}),
}

# Tags that load another template: a prompt template is one self-contained file.
_LOADING_TAGS: dict[type[nodes.Node], str] = {
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
}


# -- limits ------------------------------------------------------------------------------------
class _LimitExceeded(Exception):
    """A render went past a limit; the text says which, as a clause ("ran longer than ...")."""


@dataclass
class _Limits:
    """The limits of one render: a deadline and the most characters one value may hold."""

    deadline: float
    size: int

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(
                f"ran longer than the {TEMPLATE_TIME_LIMIT:g}-second limit for one render"
            )

    def fits(self, size: int) -> None:
        if size > self.size:
            raise _LimitExceeded(
                f"would build text longer than {self.size:,} characters (its inputs plus "
                f"{TEMPLATE_SIZE_LIMIT:,})"
            )

    def check(self, value: Any) -> Any:
        """``value``, once the time limit and its size and nesting are checked."""
        self.tick()
        self.fits(_text_size(value, self.size, nesting=TEMPLATE_NESTING_LIMIT))
        return value

    def numbers(self, args: Iterable[Any]) -> None:
        """A width or count beyond the size limit could only build text past it."""
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > self.size:
                raise _LimitExceeded(
                    f"passes the number {arg:,} to a function or filter; a width or count may be "
                    f"at most {self.size:,} (the size limit)"
                )

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.tick()
            yield item


_ACTIVE: ContextVar[_Limits | None] = ContextVar("expertprompting_template_limits", default=None)


def _text_size(value: Any, budget: int, *, indent: int = 0, nesting: int | None = None) -> int:
    """An upper bound of ``len(str(value))``, counted up to ``budget`` (past it: ``budget + 1``).

    Shared parts count every time they appear, as printing would show them, so a list that
    holds itself twice, twice over and so on is measured by what it prints, not by its memory.
    ``indent`` adds that many spaces per nesting level to each element, as pretty-printing
    does. With ``nesting``, a value nested deeper than that raises :class:`_LimitExceeded`.
    """
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if nesting is not None and depth > nesting:
            raise _LimitExceeded(f"builds a value nested more than {nesting} levels deep")
        children: Iterable[Any] = ()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (bytes, bytearray)):
            total += 4 * len(item) + 3
        elif item is None or isinstance(item, (bool, Undefined)):
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2  # a decimal digit holds log2(10) > 3 bits
        elif isinstance(item, (float, complex, range)) or callable(item):
            total += 48
        elif isinstance(item, Mapping):
            total += 2 + len(item) * (4 + indent * (depth + 1))
            if total <= budget:
                children = [*item.keys(), *item.values()]
        elif isinstance(item, Collection):
            total += 2 + len(item) * (2 + indent * (depth + 1))
            if total <= budget:
                children = list(item)
        elif hasattr(item, "__dict__") and not isinstance(item, (type, types.ModuleType)):
            fields = vars(item)
            total += len(type(item).__name__) + 2 + len(fields) * (4 + indent * (depth + 1))
            if total <= budget:
                children = [*fields.keys(), *fields.values()]
        else:
            total += 48
        if total > budget:
            return budget + 1
        stack.extend((child, depth + 1) for child in children)
    return total


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], at: int, name: str, default: Any) -> Any:
    """Argument ``name`` of a call, given by position ``at`` or by keyword."""
    return args[at] if len(args) > at else kwargs.get(name, default)


_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _format_size(limits: _Limits, fmt: Any, values: Iterable[Any]) -> int:
    """An upper bound of the length of ``fmt`` (``%``-style or ``{}``-style) filled with ``values``.

    Each field prints at most its widest argument, padded to its width and precision, where a
    width may also come from an argument (``%*d``, ``{:{}}``): then any number given counts.
    """
    text = fmt.decode("latin-1") if isinstance(fmt, (bytes, bytearray)) else str(fmt)
    values = list(values)
    widest = max((_text_size(v, limits.size) for v in values), default=0)
    percent = list(_PERCENT_FIELD.finditer(text))
    fields = [sum(int(n) for n in m.groups() if n and n != "*") for m in percent]
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:  # not a {}-style format; str.format will say so itself
        parsed = []
    fields += [
        sum(map(int, re.findall(r"\d+", spec or "")))
        for _, name, spec, _ in parsed
        if name is not None
    ]
    biggest = 0
    if any("*" in m.groups() for m in percent) or any("{" in (f[2] or "") for f in parsed):
        biggest = max(
            (abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool)), default=0
        )
    return len(text) + sum(pad + widest + biggest for pad in fields)


def _values(arguments: Any) -> Iterable[Any]:
    """What a ``%`` operator formats: a tuple's items, a mapping's values, or the one value."""
    if isinstance(arguments, tuple):
        return arguments
    if isinstance(arguments, Mapping):
        return arguments.values()
    return (arguments,)


def _replaced_size(text: str, old: Any, new: Any, count: Any) -> int:
    old, new = str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _joined(limits: _Limits, items: Iterable[Any], separator: Any) -> list[Any]:
    """``items`` as a list, once their join with ``separator`` is known to fit."""
    listed = []
    total = 0
    for item in items:
        limits.tick()
        listed.append(item)
        total += _text_size(item, limits.size) + len(str(separator))
        limits.fits(total)
    return listed


# Checks before a growing filter runs: (limits, value, args, kwargs) -> the value to filter
# (the same one, or an iterator's items as a list once they are known to fit).
_Precheck = Callable[[_Limits, Any, tuple[Any, ...], dict[str, Any]], Any]


def _before_join(limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _joined(limits, value, _arg(args, kwargs, 0, "d", ""))


def _before_replace(
    limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    old, new = _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", "")
    limits.fits(_replaced_size(str(value), old, new, _arg(args, kwargs, 2, "count", None)))
    return value


def _before_indent(
    limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    text = str(value)
    prefix = len(width) if isinstance(width, str) else int(width)
    limits.fits(len(text) + (text.count("\n") + 1) * max(0, prefix))
    return value


# What textwrap splits text into: runs of its white space, and runs of anything else.
_WRAP_RUNS = (re.compile(r"[^\t\n\x0b\x0c\r ]+"), re.compile(r"[\t\n\x0b\x0c\r ]+"))


def _before_wordwrap(
    limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    wrapstring = _arg(args, kwargs, 2, "wrapstring", None) or "\n"
    text = str(value)
    limits.fits(len(text) + (len(text) + 1) * len(str(wrapstring)))  # at most a line per character
    width = _arg(args, kwargs, 0, "width", 79)
    if _arg(args, kwargs, 1, "break_long_words", True) and isinstance(width, int):
        # textwrap copies what is left of a long word (or run of spaces) for every line it
        # breaks off: work that grows with the square of its length, all in one call.
        longest = max(max(map(len, pattern.split(text))) for pattern in _WRAP_RUNS)
        if longest * longest // max(1, width) > _WRAP_WORK_LIMIT:
            raise _LimitExceeded(
                f"would take too long to wrap a {longest:,}-character word (or run of spaces) "
                f"at width {width}"
            )
    return value


def _before_format(
    limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    limits.fits(_format_size(limits, value, [*args, *kwargs.values()]))
    return value


def _before_urlize(
    limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    target, rel = _arg(args, kwargs, 2, "target", None), _arg(args, kwargs, 3, "rel", None)
    extra = len(str(target or "")) + len(str(rel or ""))
    limits.fits((len(str(value).split()) + 1) * extra)  # each word may become a link
    return value


def _before_tojson(
    limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    indent = _arg(args, kwargs, 0, "indent", None)
    limits.fits(_text_size(value, limits.size, indent=indent if isinstance(indent, int) else 0))
    return value


def _before_pprint(
    limits: _Limits, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    limits.fits(_text_size(value, limits.size, indent=1))
    return value


_FILTER_PRECHECKS: dict[str, _Precheck] = {
    "format": _before_format,
    "indent": _before_indent,
    "join": _before_join,
    "pprint": _before_pprint,
    "replace": _before_replace,
    "tojson": _before_tojson,
    "urlize": _before_urlize,
    "wordwrap": _before_wordwrap,
}


def _limited_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a filter), with the render's limits checked before and after it runs."""
    passes = hasattr(func, "jinja_pass_arg")  # a context/environment argument comes first
    precheck = _FILTER_PRECHECKS.get(name)

    def limited(*args: Any, **kwargs: Any) -> Any:
        limits = _ACTIVE.get()
        if limits is None:
            return func(*args, **kwargs)
        limits.tick()
        head, (value, *rest) = args[: int(passes)], args[int(passes) :]
        limits.numbers([*rest, *kwargs.values()])
        if precheck is not None:
            value = precheck(limits, value, tuple(rest), kwargs)
        return limits.check(func(*head, value, *rest, **kwargs))

    if passes:  # the same first argument, so the same kind of filter for Jinja
        limited.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    limited.__name__ = getattr(func, "__name__", name)
    return limited


@pass_environment
def _limited_sum(
    environment: jinja2.Environment,
    iterable: Iterable[Any],
    attribute: str | int | None = None,
    start: Any = 0,
) -> Any:
    """Jinja's ``sum``, adding lists or tuples one at a time between checks.

    Python's ``sum`` of lists or tuples copies the total so far at every step, all in one call:
    work that grows with the square of the count. Numbers add up in linear time, and Python
    refuses to sum strings: both go to Jinja's own ``sum``.
    """
    limits = _ACTIVE.get()
    if limits is None or isinstance(start, (int, float, complex, str)):
        return do_sum(environment, iterable, attribute, start)
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total, size = start, _text_size(start, limits.size)
    for item in iterable:
        limits.tick()
        size += _text_size(item, limits.size)
        limits.fits(size)
        total = total + item
    return total


def _limited_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    limits = _ACTIVE.get()
    if limits is not None:
        limits.fits(n * (abs(min) + abs(max)) * 16)  # words of up to 14 letters, and markup
    return generate_lorem_ipsum(n, html, min, max)


def _limited_concat(parts: Iterable[str]) -> str:
    """``"".join``, for a block's collected output (a macro, ``{% set %}...``, ``{% filter %}``)."""
    limits = _ACTIVE.get()
    if limits is None:
        return "".join(parts)
    listed = list(parts)
    limits.tick()
    limits.fits(sum(map(len, listed)))
    return "".join(listed)


# Internal filters the compiled code of a user's template calls. Their names hold a space, which
# no template can write; context-taking filters are never run while compiling.
_ITERATE = "expertprompting iterate"
_CONCAT = "expertprompting concat"
_CHECK = "expertprompting check"


@pass_context
def _iterate_filter(context: jinja2.runtime.Context, value: Any) -> Any:
    limits = _ACTIVE.get()
    return value if limits is None else limits.iterate(value)


@pass_context
def _concat_filter(context: jinja2.runtime.Context, values: tuple[Any, ...]) -> str:
    texts = [str(v) for v in values]
    limits = _ACTIVE.get()
    if limits is not None:
        limits.tick()
        limits.fits(sum(map(len, texts)))
    return "".join(texts)


@pass_context
def _check_filter(context: jinja2.runtime.Context, value: Any) -> Any:
    limits = _ACTIVE.get()
    return value if limits is None else limits.check(value)


def _internal(name: str, node: nodes.Node) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Instrument(NodeTransformer):
    """Rewrites a parsed template so that its loops, ``~`` and literals check the limits.

    A loop that outputs nothing and calls nothing would otherwise never meet a check; a list
    literal can double a value's printed size without any call (``[x, x]``).
    """

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _internal(_ITERATE, node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _internal(_CONCAT, nodes.Tuple(node.nodes, "load", lineno=node.lineno))

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _internal(_CHECK, node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _internal(_CHECK, node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _internal(_CHECK, node) if node.ctx == "load" else node


class _LimitedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _Instrument().visit(node)
        super().visit_Template(node, frame)


# Methods of str and bytes whose result can be many times their input in one C call.
_GROWING_METHODS = frozenset({"replace", "join", "translate", "expandtabs"})


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the render's limits (:class:`_Limits`) checked wherever a template acts.

    Outside a render (no limits set) it behaves exactly as :class:`ImmutableSandboxedEnvironment`.
    """

    code_generator_class = _LimitedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})
    concat = staticmethod(_limited_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _limited_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(
            {_ITERATE: _iterate_filter, _CONCAT: _concat_filter, _CHECK: _check_filter}
        )
        self.filters["sum"] = _limited_filter("sum", _limited_sum)
        self.globals["lipsum"] = _limited_lipsum

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        limits = _ACTIVE.get()
        if limits is None:
            return super().call(context, obj, *args, **kwargs)
        limits.tick()
        limits.numbers([*args, *kwargs.values()])
        owner = getattr(obj, "__self__", None)
        if isinstance(obj, types.BuiltinMethodType) and isinstance(owner, (str, bytes)):
            args = self._before_method(limits, owner, obj.__name__, args, kwargs)
        elif isinstance(obj, LoopContext) and args:  # a recursive loop's next level
            args = (limits.iterate(args[0]), *args[1:])
        return limits.check(super().call(context, obj, *args, **kwargs))

    @staticmethod
    def _before_method(
        limits: _Limits, owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: Any
    ) -> tuple[Any, ...]:
        if name not in _GROWING_METHODS:
            return args
        text = owner.decode("latin-1") if isinstance(owner, bytes) else owner
        if name == "join" and args:
            return (_joined(limits, args[0], text), *args[1:])
        if name == "replace":
            old, new = (
                (a.decode("latin-1") if isinstance(a, bytes) else a)
                for a in (_arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", ""))
            )
            limits.fits(_replaced_size(text, old, new, _arg(args, kwargs, 2, "count", -1)))
        elif name == "expandtabs":
            tabsize = _arg(args, kwargs, 0, "tabsize", 8)
            limits.fits(len(text) + text.count("\t") * max(0, int(tabsize)))
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            limits.fits(len(text) * max(1, longest))
        return args

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        limits = _ACTIVE.get()
        if limits is None:
            return super().call_binop(context, operator, left, right)
        limits.tick()
        repeatable = (str, bytes, list, tuple)
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                self._bits(left.bit_length() + right.bit_length())
            elif isinstance(left, repeatable) and isinstance(right, int) and right > 0:
                limits.fits(_text_size(left, limits.size) * right)
            elif isinstance(right, repeatable) and isinstance(left, int) and left > 0:
                limits.fits(_text_size(right, limits.size) * left)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                self._bits(right * left.bit_length())
        elif operator == "%" and isinstance(left, (str, bytes)):
            limits.fits(_format_size(limits, left, _values(right)))
        return limits.check(super().call_binop(context, operator, left, right))

    @staticmethod
    def _bits(bits: int) -> None:
        if bits > _INT_BITS_LIMIT:
            raise _LimitExceeded(
                f"would compute a number of more than {_INT_BITS_LIMIT:,} bits "
                f"(about {_INT_BITS_LIMIT * 3 // 10:,} digits)"
            )

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        sandboxed = wrapper
        fmt: str = value.__self__
        by_name = value.__name__ == "format_map"

        def limited(*args: Any, **kwargs: Any) -> str:
            limits = _ACTIVE.get()
            if limits is not None:
                values = list(args[0].values()) if by_name and args else [*args, *kwargs.values()]
                limits.fits(_format_size(limits, fmt, values))
            return sandboxed(*args, **kwargs)

        return limited


_OPTIONS: dict[str, Any] = {
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
    "autoescape": False,
}
_ENV = ImmutableSandboxedEnvironment(**_OPTIONS)
"""The built-in templates' environment: we wrote them, so they render without limits."""
_LIMITED_ENV = _LimitedEnvironment(**_OPTIONS)
"""User templates' environment."""


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised on (Jinja rewrites tracebacks to show it)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled, checked template for one step of the method.

    ``limited`` is true for a user's template: it renders within the time and size limits.
    """

    kind: TemplateKind
    source: str
    origin: str
    variables: frozenset[str]
    compiled: jinja2.Template
    limited: bool = False

    def render(self, **context: Any) -> str:
        """Render with ``context``; the result is stripped of outer white space."""
        if context.get("input") and "input" not in self.variables:
            raise TemplateError(
                f"The {self.kind} template ({self.origin}) does not use {{{{ input }}}}, but this "
                "item has an input that would be lost. Add {{ input }} to the template."
            )
        if not self.limited:
            try:
                return self.compiled.render(**context).strip()
            except jinja2.TemplateError as exc:
                raise self._failed(exc) from exc
        limits = _Limits(
            deadline=time.monotonic() + TEMPLATE_TIME_LIMIT,
            size=TEMPLATE_SIZE_LIMIT + _text_size(context, sys.maxsize),
        )
        token = _ACTIVE.set(limits)
        chunks = self.compiled.generate(**context)
        try:
            parts: list[str] = []
            total = 0
            for chunk in chunks:
                total += len(chunk)
                limits.fits(total)
                parts.append(chunk)
            return "".join(parts).strip()
        except _LimitExceeded as exc:
            raise TemplateError(
                f"The {self.kind} template ({self.origin}) {exc}{self._at(exc)}. "
                "Make the template do less; see the limits in docs/templates.md."
            ) from exc
        except RecursionError as exc:
            raise TemplateError(
                f"The {self.kind} template ({self.origin}) recursed too deeply{self._at(exc)} "
                "(a macro or recursive loop that never stops?). Fix the template."
            ) from exc
        except MemoryError as exc:
            raise TemplateError(
                f"The {self.kind} template ({self.origin}) ran out of memory{self._at(exc)}. "
                "Make the template build less."
            ) from exc
        except TemplateError:
            raise
        except Exception as exc:  # the template's own error (1/0, 'a' + 1, a bad format...)
            raise self._failed(exc) from exc
        finally:
            if isinstance(chunks, Generator):  # it is: stop it where it stands
                chunks.close()
            _ACTIVE.reset(token)

    def _at(self, exc: BaseException) -> str:
        line = _template_line(exc)
        return f" at line {line}" if line else ""

    def _failed(self, exc: Exception) -> TemplateError:
        what = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
        return TemplateError(
            f"The {self.kind} template ({self.origin}) failed to render{self._at(exc)}: "
            f"{' '.join(what.split()).rstrip('.')}. Fix the template; variables available: "
            f"{', '.join(sorted(_ALLOWED[self.kind]))}."
        )


def _read_file(kind: TemplateKind, path: Path) -> str:
    try:
        if path.exists() and not path.is_file():  # a FIFO or device could block or never end
            what = "a directory" if path.is_dir() else "not a regular file"
            raise TemplateError(f"The {kind} template file {path} is {what}. Pass a text file.")
        with path.open(encoding="utf-8") as file:
            text = file.read(TEMPLATE_SIZE_LIMIT + 1)
    except OSError as exc:
        raise TemplateError(f"Cannot read the {kind} template file {path}: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise TemplateError(
            f"The {kind} template file {path} is not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}). Save it as UTF-8."
        ) from exc
    return text


def _read_source(kind: TemplateKind, spec: TemplateSource | None) -> tuple[str, str]:
    if spec is None:
        text = (
            resources.files("expertprompting")
            .joinpath(f"templates/{kind}.jinja")
            .read_text(encoding="utf-8")
        )
        return text, f"built-in {kind}.jinja"
    if isinstance(spec, os.PathLike):
        return _read_file(kind, Path(spec)), str(Path(spec))
    if "{{" not in spec and "{%" not in spec and os.path.isfile(spec):
        return _read_file(kind, Path(spec)), spec
    return spec, "template string"


def load_template(kind: TemplateKind, spec: TemplateSource | None = None) -> PromptTemplate:
    """Compile and check the ``kind`` template: the built-in one, a file path, or a source string.

    Fails now, not at the first request, when the template does not compile, loads another
    template, misses a variable the step needs, or uses one the step does not provide.
    """
    source, origin = _read_source(kind, spec)
    limited = spec is not None
    env = _LIMITED_ENV if limited else _ENV
    if limited and len(source) > TEMPLATE_SIZE_LIMIT:
        raise TemplateError(
            f"The {kind} template ({origin}) is longer than {TEMPLATE_SIZE_LIMIT:,} characters. "
            "A prompt template holds the prompt's wording; pass long text as data."
        )
    # Compiling folds constant expressions, running filters on them: within the limits too.
    token = _ACTIVE.set(
        _Limits(time.monotonic() + TEMPLATE_TIME_LIMIT, TEMPLATE_SIZE_LIMIT) if limited else None
    )
    try:
        parsed = env.parse(source)
        variables = frozenset(meta.find_undeclared_variables(parsed))
        loading = next(iter(parsed.find_all(tuple(_LOADING_TAGS))), None)
        if loading is not None:
            raise TemplateError(
                f"The {kind} template ({origin}) uses {_LOADING_TAGS[type(loading)]} "
                f"(line {loading.lineno}); a prompt template cannot load other templates. "
                "Put what it needs in the template itself."
            )
        compiled = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"The {kind} template ({origin}) is not valid Jinja: {exc.message} (line {exc.lineno})."
        ) from exc
    except (RecursionError, MemoryError, SyntaxError) as exc:
        # Python's own limits on the code a template compiles to (e.g. over 20 nested loops).
        raise TemplateError(
            f"The {kind} template ({origin}) is nested too deeply to compile "
            f"({type(exc).__name__}: {' '.join(str(exc).split())}). Flatten its blocks."
        ) from exc
    finally:
        _ACTIVE.reset(token)
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
    return PromptTemplate(kind, source, origin, variables, compiled, limited)
