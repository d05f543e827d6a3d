"""Reading gold-answer replies: the forms models write, and the replies that must stay unread.

A reply that cannot be read gives None, which the report counts as unreadable; the tables
below pin both sides, so a looser rule that starts guessing fails here.
"""

from __future__ import annotations

import doctest

import pytest

from expertprompting._evaluation import extract
from expertprompting._evaluation.extract import extract_choice, extract_exact, normalise_text

CAPITALS = ["London", "Paris", "Rome", "Paris, Texas"]

CHOICES: list[tuple[str, str | None]] = [
    # -- a lone letter
    ("B", "B"),
    ("b", "B"),
    ("(B)", "B"),
    ("B)", "B"),
    ("B.", "B"),
    ("  **C**  ", "C"),
    # -- a stated answer
    ("Answer: B", "B"),
    ("The answer is B", "B"),
    ("The answer is (B).", "B"),
    ("the answer is (B) Paris", "B"),
    ("The correct answer is **C**.", "C"),
    ("Final answer: (b)", "B"),
    ("The best option is C because Rome is the capital of Italy.", "C"),
    ("I would choose option C.", "C"),
    ("Let me think. France's capital is Paris, not London.\nSo the answer is B.", "B"),
    ("Answer: B\n\nA) London is wrong.\nB) Paris is right.", "B"),
    ("The answer is B. Final answer: B", "B"),
    ("The answer is B, not C.", "B"),
    # -- a leading letter marker
    ("B) Paris\n\nParis has been the capital since the 10th century.", "B"),
    ("(C) Rome", "C"),
    # -- the option's text
    ("Paris", "B"),
    ("paris.", "B"),
    ("The answer is Paris, the capital of France.", "B"),
    ("The answer is Paris, Texas.", "D"),  # "Paris" inside "Paris, Texas" is not a second option
    ("Answer: rome", "C"),
    # -- unreadable: several answers, none, or an option not offered
    ("B or C", None),
    ("The answer is B or C.", None),
    ("The answer is A and B.", None),
    ("Answer: A\nActually, on reflection, the answer is C.", None),
    ("A) London is wrong.\nB) Paris is right.", None),  # walks through the options
    ("I think it is Paris, not London.", None),  # no stated answer, two options named
    ("London or Paris", None),
    ("I'm not sure.", None),
    ("The answer is straightforward.", None),  # states an answer that names no option
    ("The answer is Berlin.", None),
    ("The answer is E.", None),  # no option E
    ("F", None),
    ("", None),
    ("   ", None),
]


@pytest.mark.parametrize(("reply", "letter"), CHOICES)
def test_extract_choice(reply: str, letter: str | None) -> None:
    assert extract_choice(reply, CAPITALS) == letter


def test_extract_choice_without_a_reply_or_options() -> None:
    assert extract_choice(None, CAPITALS) is None
    assert extract_choice("A", []) is None


def test_numeric_options_are_read_as_text() -> None:
    sizes = ["3", "4", "5"]
    assert extract_choice("The answer is 4.", sizes) == "B"
    assert extract_choice("5", sizes) == "C"
    assert extract_choice("The answer is 6.", sizes) is None


EXACT: list[tuple[str, str, bool | None]] = [
    # -- numbers
    ("42", "42", True),
    ("The answer is 42.", "42", True),
    ("6 * 7 = 42, so the answer is 42.", "42", True),
    ("The answer is 3.0", "3", True),
    ("Answer: 1,000 apples", "1000", True),
    ("The answer is **1,000**", "1000.0", True),
    ("The answer is $1,250.50.", "1250.5", True),
    ("The answer is 1/2", "0.5", True),
    ("The answer is 50%", "50", True),
    ("The answer is -7", "-7", True),
    ("Answer: -7", "7", False),
    ("Answer: 3.5. Next we check the units.", "3.5", True),
    ("The answer is 5 + 3 = 8", "8", True),
    ("Let me compute.\n6 * 7 = 42\n**42**", "42", True),
    ("so the final answer is **42**", "42", True),
    ("\\boxed{42}", "42", True),
    ("We get $x = \\boxed{41}$.", "42", False),
    ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18", True),
    ("The answer is 41.", "42", False),
    # -- words
    ("It's Paris.", "Paris", True),
    ("Paris", "paris", True),
    ("London", "Paris", False),
    ("The answer is the Pacific Ocean", "Pacific Ocean", True),
    ("The answer is Paris, because it has been the capital since 987.", "Paris", True),
    ("Final answer: Washington, D.C.", "Washington, D.C.", True),
    ("The answer is Lyon.", "Paris", False),
    # -- unreadable: no final answer, or final answers that disagree
    ("I don't know", "42", None),
    ("I am not sure.", "42", None),
    ("Paris is the capital and largest city of France.", "Paris", None),
    ("**Step 1**: multiply\n6 * 7 is 42", "42", None),
    ("The answer is 40. Wait, I made a mistake: the answer is 42.", "42", None),
    ("The answer is between 3 and 5.", "4", None),
    ("", "42", None),
]


@pytest.mark.parametrize(("reply", "answer", "right"), EXACT)
def test_extract_exact(reply: str, answer: str, right: bool | None) -> None:
    assert extract_exact(reply, answer) is right


def test_extract_exact_without_a_reply() -> None:
    assert extract_exact(None, "42") is None


def test_normalise_text_is_squad_style() -> None:
    assert normalise_text("  The Pacific   Ocean!") == "pacific ocean"
    assert normalise_text("An apple, a day") == "apple day"


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(extract).failed == 0
