"""A user's template renders within limits: it loads no other template, and a render that runs
too long or builds too much fails as one ``TemplateError`` line instead of hanging or crashing.

Renders that hit the time limit are timed only against a wide bound (the limit is one second;
the bound is thirty), enough to tell "stopped at the limit" from "ran on until done".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from expertprompting import ExpertPrompter, TemplateError
from expertprompting._method import templating as templating
from expertprompting._method.templating import (
    TEMPLATE_SIZE_LIMIT,
    TEMPLATE_TIME_LIMIT,
    TemplateKind,
    load_template,
)
from expertprompting.testing import FakeOpenAIServer

EXE = str(Path(sys.executable).with_name("expertprompting"))
WELL_BEFORE = 30.0  # seconds: what "stopped at the limit" must beat, on a loaded machine

NESTED_LOOPS = (
    "You are a patient teacher.\n"
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n"
    "{{ instruction }}"
)


def refused(source: str, match: str) -> TemplateError:
    """The error a strategy template ``source`` fails with, when loaded or rendered."""
    started = time.monotonic()
    with pytest.raises(TemplateError, match=match) as info:
        load_template("strategy", source).render(instruction="Why is the sky blue?")
    assert time.monotonic() - started < WELL_BEFORE
    message = str(info.value)
    assert "\n" not in message
    return info.value


# -- loading ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tag", "named"),
    [
        ("{% include 'header.jinja' %}", "{% include %}"),
        ("{% extends 'base.jinja' %}", "{% extends %}"),
        ("{% import 'macros.jinja' as m %}", "{% import %}"),
        ("{% from 'macros.jinja' import f %}", "{% from ... import %}"),
    ],
)
def test_a_template_cannot_load_another(tag: str, named: str) -> None:
    source = f"Be brief.\n{tag}\n{{{{ instruction }}}}"
    with pytest.raises(TemplateError) as info:
        load_template("strategy", source)
    assert str(info.value) == (
        f"The strategy template (template string) uses {named} (line 2); a prompt template "
        "cannot load other templates. Put what it needs in the template itself."
    )
    with pytest.raises(TemplateError, match="cannot load other templates"):
        ExpertPrompter(model="gpt-4o-mini", api_key="k", answer_template=source + "{{ identity }}")


def test_a_template_source_beyond_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.jinja"
    path.write_text("{{ instruction }}" + "x" * TEMPLATE_SIZE_LIMIT, encoding="utf-8")
    with pytest.raises(TemplateError, match=r"huge\.jinja\) is longer than 1,000,000 characters"):
        load_template("strategy", path)


def test_unreadable_template_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="is a directory"):
        load_template("strategy", tmp_path)
    latin = tmp_path / "latin.jinja"
    latin.write_bytes("{{ instruction }} caf\u00e9".encode("latin-1"))
    with pytest.raises(TemplateError, match=r"latin\.jinja is not UTF-8 text .* Save it as UTF-8"):
        load_template("strategy", latin)


def test_constants_folded_while_compiling_are_limited_too() -> None:
    # Jinja runs filters on constant arguments while it compiles; wrapping a run of 245,000
    # spaces at width 1 would take seconds there, before any render. Within the limits the
    # compiler gives up on folding it, and the render fails at once.
    refused(
        "{{ 'a'|center(490000)|wordwrap(1) }}{{ instruction }}",
        "would take too long to wrap a 245,000-character word",
    )


# -- time -------------------------------------------------------------------------------------
def test_nested_loops_that_output_nothing_stop_at_the_time_limit() -> None:
    error = refused(NESTED_LOOPS, "ran longer than the 1-second limit for one render at line 2")
    assert str(error).endswith("Make the template do less; see the limits in docs/templates.md.")


def test_nested_loops_that_output_stop_at_a_limit() -> None:
    source = "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}"
    refused(source + "{{ instruction }}", "ran longer than|longer than 1,0")


def test_a_macro_that_calls_itself_forever_is_one_line() -> None:
    source = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}{{ instruction }}"
    refused(source, "recursed too deeply at line 1")


def test_a_macro_that_branches_exponentially_stops_at_the_time_limit() -> None:
    source = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}{{ instruction }}"
    )
    refused(source, "ran longer than the 1-second limit")


def test_a_sum_of_many_lists_stops_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's sum copies the total so far for every list it adds (all in one call that no
    # check could interrupt): 500,000 one-item lists would take minutes.
    monkeypatch.setattr(templating, "TEMPLATE_SIZE_LIMIT", 5_000_000)
    refused("{{ ([[0]] * 500000)|sum(start=[])|length }}{{ instruction }}", "ran longer than")


def test_wrapping_a_long_word_is_refused_at_once() -> None:
    # textwrap copies what is left of a long word for every line it breaks off.
    source = "{{ ('a' * 490000)|wordwrap(1) }}{{ instruction }}"
    refused(source, "would take too long to wrap a 490,000-character word")


# -- size -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "expression",
    [
        "'a' * 10**9",
        "'%09999999d'|format(1)",
        "'%09999999d' % 1",
        "'{:09999999d}'.format(1)",
        "'x'.ljust(999999) ~ 'x'.ljust(999999)",
        "(['abc'] * 1000)|join('x' * 1000)",
        "lipsum(10**6)",
    ],
)
def test_text_that_would_grow_past_the_size_limit_is_refused(expression: str) -> None:
    refused(
        f"{{{{ {expression} }}}}{{{{ instruction }}}}",
        r"would build text longer than 1,000,\d{3} characters \(its inputs plus 1,000,000\)",
    )


@pytest.mark.parametrize("join", ["~", "+"])
def test_doubling_a_string_through_a_namespace_is_refused(join: str) -> None:
    source = (
        "{% set ns = namespace(s='a') %}"
        f"{{% for i in range(64) %}}{{% set ns.s = ns.s {join} ns.s %}}{{% endfor %}}"
        "{{ ns.s }}{{ instruction }}"
    )
    refused(source, "would build text longer than")


def test_doubling_a_list_by_nesting_is_refused() -> None:
    # [x, x] holds no more memory than x, but prints twice as long: 2**64 characters.
    source = (
        "{% set ns = namespace(l=['ab']) %}"
        "{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
        "{{ ns.l }}{{ instruction }}"
    )
    refused(source, "would build text longer than|nested more than")


def test_huge_numbers_are_refused() -> None:
    refused("{{ range(10**8)|list }}{{ instruction }}", "passes the number 100,000,000")
    refused("{{ instruction|center(10**9) }}", "passes the number 1,000,000,000")
    refused("{{ 3 ** (10**8) }}{{ instruction }}", "a number of more than 65,536 bits")


def test_values_nested_too_deep_are_refused() -> None:
    source = (
        "{% set ns = namespace(t=1) %}"
        "{% for i in range(100000) %}{% set ns.t = (ns.t,) %}{% endfor %}"
        "{{ {ns.t: 1} }}{{ instruction }}"
    )
    refused(source, "nested more than 100 levels deep")


# -- what still works -------------------------------------------------------------------------
def test_a_big_but_legal_template_renders_in_full() -> None:
    source = (
        "{% macro row(i) %}{{ i }}. {{ instruction }}{% endmacro %}"
        "{% set ns = namespace(text='') %}"
        "{% for i in range(2000) %}{% set ns.text = ns.text ~ row(i) ~ '\\n' %}{% endfor %}"
        "{{ ns.text }}{{ '=' * 100000 }}\n{{ input }}"
    )
    instruction = "Explain tides."
    long_input = "z" * (3 * TEMPLATE_SIZE_LIMIT)  # inputs never count against the limit
    text = load_template("strategy", source).render(instruction=instruction, input=long_input)
    lines = text.split("\n")
    assert lines[:2000] == [f"{i}. {instruction}" for i in range(2000)]
    assert lines[2000] == "=" * 100000
    assert lines[2001] == long_input


def test_a_failed_render_leaves_later_renders_unlimited_by_it() -> None:
    slow = load_template("strategy", NESTED_LOOPS)
    fine = load_template("strategy", "Be brief.\n{{ instruction }}")
    for _ in range(2):
        with pytest.raises(TemplateError, match="ran longer than"):
            slow.render(instruction="x")
        assert fine.render(instruction="Tides?") == "Be brief.\nTides?"
        assert load_template("vanilla").render(instruction="Tides?", input=None) == "Tides?"


@pytest.mark.parametrize(
    ("kind", "context"),
    [
        ("identity", {"instruction": "Tides?", "input": "At the coast.", "exemplars": []}),
        ("identity_system", {}),
        ("identity_turn", {"instruction": "Tides?", "input": None}),
        ("answer", {"identity": "You are a tide expert.", "instruction": "Tides?", "input": None}),
        ("static", {"instruction": "Tides?", "input": "x" * (2 * TEMPLATE_SIZE_LIMIT)}),
        ("vanilla", {"instruction": "Tides?", "input": None}),
        ("judge", {"question": "Tides?", "answer_1": "Moon.", "answer_2": "Sun."}),
        ("experts", {"instruction": "Tides?", "input": None, "n": 3}),
        (
            "aggregate",
            {
                "instruction": "Tides?",
                "input": None,
                "answers": [{"expert": "An oceanographer", "answer": "The Moon."}] * 3,
            },
        ),
    ],
)
def test_built_in_templates_render_as_before(
    kind: TemplateKind, context: dict[str, object]
) -> None:
    built_in = load_template(kind)
    assert not built_in.limited
    plain = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    expected = plain.from_string(built_in.source).render(**context).strip()
    assert built_in.render(**context) == expected
    # and the same source, given as a template of the user's, renders the same text
    assert load_template(kind, built_in.source).render(**context) == expected


def test_the_time_limit_is_what_the_docs_say() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "templates.md").read_text(encoding="utf-8")
    assert f"| {TEMPLATE_TIME_LIMIT:g} second (`TEMPLATE_TIME_LIMIT`)" in docs
    assert f"| {TEMPLATE_SIZE_LIMIT:,} characters (`TEMPLATE_SIZE_LIMIT`)" in docs


# -- the Python API and the command line -------------------------------------------------------
def test_a_looping_template_fails_before_anything_is_sent(server: FakeOpenAIServer) -> None:
    ep = ExpertPrompter(
        model="gpt-4o-mini", base_url=server.base_url, api_key="k", vanilla_template=NESTED_LOOPS
    )
    with pytest.raises(TemplateError, match=r"vanilla template .* ran longer than"):
        ep.answer("Why is the sky blue?", strategy="vanilla")
    assert server.requests == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_cli_a_looping_strategy_template_is_one_line_and_exit_2(tmp_path: Path) -> None:
    template = tmp_path / "slow.jinja"
    template.write_text(NESTED_LOOPS, encoding="utf-8")
    started = time.monotonic()
    result = _cli("prompt", "Why?", "--strategy-template", f"slow={template}", "--strategy", "slow")
    assert time.monotonic() - started < WELL_BEFORE
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"expertprompting: error: The strategy template ({template}) ran longer than the "
        "1-second limit for one render at line 2. Make the template do less; see the limits in "
        "docs/templates.md."
    ]


@pytest.mark.parametrize(
    "source",
    [
        "{% include 'other.jinja' %}{{ instruction }}",
        "{{ 'a' * 10**9 }}{{ instruction }}",
        "{{ range(10**8)|list }}{{ instruction }}",
    ],
)
def test_cli_answer_with_a_bad_strategy_template_sends_nothing(
    server: FakeOpenAIServer, tmp_path: Path, source: str
) -> None:
    template = tmp_path / "bad.jinja"
    template.write_text(source, encoding="utf-8")
    result = _cli(
        "answer", "Why?", "--base-url", server.base_url,
        "--strategy-template", f"bad={template}", "--strategy", "bad",
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"expertprompting: error: The strategy template ({template}) ")
    assert "Traceback" not in result.stderr
    assert server.requests == []
