"""How results show themselves: a short repr, Markdown views escaped alike, costs that agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expertprompting import ExpertAnswer, ExpertIdentity, Usage
from expertprompting._method.results import ExpertView, format_cost

LONG_ANSWER = "Tides are the rise and fall of the sea, caused by the pull of the Moon. " * 20
LONG_IDENTITY = "You are an oceanographer who has measured tides on three continents. " * 5
USAGE = Usage(prompt_tokens=700, completion_tokens=112, total_tokens=812, requests=2, cost=3e-4)


def answer(**changes: object) -> ExpertAnswer:
    fields: dict[str, object] = {
        "instruction": "Explain tides.",
        "expert_identity": LONG_IDENTITY,
        "answer": LONG_ANSWER,
        "model": "gpt-4o-mini",
        "strategy": "expert",
        "usage": USAGE,
    }
    fields.update(changes)
    return ExpertAnswer.model_validate(fields)


def identity(**changes: object) -> ExpertIdentity:
    fields: dict[str, object] = {
        "instruction": "Explain tides.",
        "description": LONG_IDENTITY,
        "model": "gpt-4o-mini",
        "exemplars": ["a", "b", "c"],
        "usage": Usage(prompt_tokens=600, completion_tokens=90, total_tokens=690, requests=1),
    }
    fields.update(changes)
    return ExpertIdentity.model_validate(fields)


# -- repr ----------------------------------------------------------------------------------------
def test_answer_repr_is_short_and_says_what_was_left_out() -> None:
    text = repr(answer())
    assert len(text) < 300  # the default pydantic repr holds every field in full
    assert text.startswith("ExpertAnswer(strategy='expert', model='gpt-4o-mini', answer='Tides")
    assert f"...' ({len(LONG_ANSWER)} chars)" in text
    assert f"...' ({len(LONG_IDENTITY)} chars)" in text
    assert "usage=2 requests/812 tokens/$0.0003" in text
    assert "\n" not in text
    shown = re.search(r"answer='([^']*)'", text)
    assert shown is not None
    assert len(shown.group(1)) <= 63  # about 60 characters and the ellipsis


def test_a_short_answer_repr_shows_everything_that_matters() -> None:
    text = repr(
        answer(answer="Yes.", expert_identity=None, strategy="vanilla", id="q7", truncated=True)
    )
    assert text == (
        "ExpertAnswer(id='q7', strategy='vanilla', model='gpt-4o-mini', answer='Yes.', "
        "truncated=True, usage=2 requests/812 tokens/$0.0003)"
    )


def test_identity_repr_is_short() -> None:
    text = repr(identity(cached=True))
    assert text.startswith("ExpertIdentity(model='gpt-4o-mini', description='You are")
    assert f"({len(LONG_IDENTITY)} chars)" in text
    assert "exemplars=3, cached=True, usage=1 request/690 tokens)" in text
    assert len(text) < 200


# -- Markdown views -------------------------------------------------------------------------------
def test_identity_has_a_markdown_view_like_the_answer() -> None:
    md = identity(input="for a child")._repr_markdown_()
    assert md.startswith("**Instruction** (`gpt-4o-mini`)\n\n> Explain tides.")
    assert "> for a child" in md
    assert "**Expert identity**\n\n" + LONG_IDENTITY.strip() in md
    assert md.rstrip().endswith("</sub>")
    assert "1 request, 600 prompt + 90 completion tokens, 3 exemplars shown" in md


HTML_TEXT = "What does <div> do, and is a & b true?"


def test_html_in_any_text_is_shown_not_interpreted_in_both_views() -> None:
    views: list[tuple[ExpertAnswer | ExpertIdentity, int]] = [
        (answer(instruction=HTML_TEXT, expert_identity=HTML_TEXT, answer=HTML_TEXT), 3),
        (identity(instruction=HTML_TEXT, description=HTML_TEXT), 2),
    ]
    for md, texts in ((result._repr_markdown_(), texts) for result, texts in views):
        assert "<div>" not in md
        body = md.rsplit("<sub>", 1)[0]
        # instruction, identity and answer (or description) escaped the same way
        assert body.count("What does &lt;div&gt; do, and is a &amp; b true?") == texts


def test_code_is_left_alone_and_a_cut_off_code_block_is_closed() -> None:
    text = "Use `a < b` here.\n\n```python\nif a < b:\n    print('<ok>')"  # cut off at max_tokens
    md = answer(answer=text, truncated=True)._repr_markdown_()
    assert "Use `a < b` here." in md
    assert "if a < b:\n    print('<ok>')\n```" in md  # the fence is closed before the footer
    assert md.rstrip().endswith("truncated at max_tokens</sub>")
    quoted = answer(instruction="Fix `x<y`:\n```\n<tag>\n```")._repr_markdown_()
    assert "> Fix `x<y`:\n> ```\n> <tag>\n> ```" in quoted


def test_markdown_shows_the_cost_rounded_and_multi_expert_lists_its_experts() -> None:
    experts = [
        ExpertView(expert="You are A.", answer="a"),
        ExpertView(expert="You are B.", answer="b"),
    ]
    md = answer(
        strategy="multi-expert", expert_identity="1. You are A.\n2. You are B.", experts=experts
    )._repr_markdown_()
    assert "**Experts**\n\n> 1. You are A.\n> 2. You are B." in md
    assert "2 requests, 700 prompt + 112 completion tokens, $0.0003, " in md


# -- cost: null or a number, the same in rows and totals -----------------------------------------
def test_cost_is_unknown_when_any_part_of_the_spending_is_unpriced() -> None:
    priced = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, requests=1, cost=0.01)
    unpriced = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, requests=1)
    assert (priced + unpriced).cost is None  # not a silent partial sum
    assert (unpriced + priced).cost is None
    assert (priced + priced).cost == pytest.approx(0.02)
    assert (Usage() + priced).cost == pytest.approx(0.01)  # a cache hit spent nothing
    assert (Usage() + Usage()).cost is None


@pytest.mark.parametrize(
    ("cost", "text"),
    [
        (0.0, "$0"),
        (0.00001, "<$0.0001"),
        (0.00123456, "$0.0012"),
        (0.5, "$0.5000"),
        (12.345, "$12.35"),
    ],
)
def test_costs_are_shown_rounded(cost: float, text: str) -> None:
    assert format_cost(cost) == text


# -- the README's Python runs as written ------------------------------------------------------
def test_the_readme_python_blocks_are_complete_programs() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")  # an `await` outside a function does not compile
    assert any("asyncio.run(main())" in block for block in blocks)
