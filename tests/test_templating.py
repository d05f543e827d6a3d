"""Templates: checked when loaded, user text is data, user templates are sandboxed."""

from __future__ import annotations

from pathlib import Path

import pytest

from expertprompting._method.errors import TemplateError
from expertprompting._method.templating import load_template


def test_builtin_identity_template_lays_out_exemplars_like_the_paper() -> None:
    t = load_template("identity")
    ex = [{"instruction": "Do X.", "description": "You are an X expert."}]
    text = t.render(instruction="Explain tides.", input=None, exemplars=ex)
    assert "[Instruction]: Do X.\n[Agent Description]: You are an X expert." in text
    assert text.endswith("[Instruction]: Explain tides.\n[Agent Description]:")
    assert "second person" in text


def test_builtin_answer_template_puts_identity_blank_line_sentence_blank_line_instruction() -> None:
    t = load_template("answer")
    text = t.render(identity="You are a tide expert.", instruction="Explain tides.", input=None)
    assert text == (
        "You are a tide expert.\n\nGiven the identity background above, answer the following "
        "instruction.\n\nExplain tides."
    )


def test_input_is_folded_into_the_instruction() -> None:
    t = load_template("vanilla")
    assert t.render(instruction="Translate.", input="Bonjour") == "Translate.\n\nBonjour"
    assert t.render(instruction="Translate.", input=None) == "Translate."


@pytest.mark.parametrize("evil", ["{{ 7*7 }}", "{% for x in y %}", "{{ ''.__class__ }}", "{# c #}"])
def test_user_text_reaches_the_model_exactly_as_typed(evil: str) -> None:
    t = load_template("vanilla")
    assert t.render(instruction=f"Say {evil} please", input=None) == f"Say {evil} please"


def test_template_missing_required_variable_fails_at_load() -> None:
    with pytest.raises(TemplateError, match=r"never uses \{\{ identity \}\}"):
        load_template("answer", "Answer this: {{ instruction }}")


def test_template_with_unknown_variable_fails_at_load() -> None:
    with pytest.raises(TemplateError, match=r"unknown variable.*instrution"):
        load_template("vanilla", "{{ instruction }} {{ instrution }}")


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateError, match=r"not valid Jinja.*line 2"):
        load_template("vanilla", "{{ instruction }}\n{% if %}")


def test_template_ignoring_input_refuses_to_lose_it() -> None:
    t = load_template("vanilla", "Q: {{ instruction }}")
    assert t.render(instruction="hi", input=None) == "Q: hi"
    with pytest.raises(TemplateError, match="input that would be lost"):
        t.render(instruction="hi", input="data")


def test_template_from_file(tmp_path: Path) -> None:
    path = tmp_path / "static.jinja"
    path.write_text("EXPERT MODE\n{{ instruction }}{% if input %}\n{{ input }}{% endif %}")
    t = load_template("static", path)
    assert t.render(instruction="go", input=None) == "EXPERT MODE\ngo"
    assert load_template("static", str(path)).origin == str(path)


def test_missing_file_path_hint() -> None:
    with pytest.raises(TemplateError, match="no such file"):
        load_template("static", "templates/nope.jinja")


def test_user_templates_are_sandboxed() -> None:
    t = load_template("vanilla", "{{ instruction.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError, match="failed to render"):
        t.render(instruction="x", input=None)


def test_strict_undefined_attribute_is_a_template_error() -> None:
    t = load_template(
        "identity", "{% for e in exemplars %}{{ e.nope }}{% endfor %}{{ instruction }}"
    )
    with pytest.raises(TemplateError, match="failed to render"):
        t.render(instruction="x", input=None, exemplars=[{"instruction": "a"}])
