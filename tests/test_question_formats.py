"""Question files real users bring: Vicuna, MT-Bench, Alpaca and ours, read by the one reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from expertprompting import read_items
from expertprompting._datasets.items import (
    DatasetItem,
    InputProblem,
    choice_letter,
    coerce_item,
    reference_answer,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_a_vicuna_row_gives_its_id_text_and_category() -> None:
    item = coerce_item({"question_id": 7, "category": "fermi", "text": "How many piano tuners?"})
    assert (item.id, item.instruction, item.input) == ("7", "How many piano tuners?", None)
    # the fields that became the item are not kept twice
    assert item.extra == {"category": "fermi"}


def test_an_mt_bench_row_asks_its_first_turn() -> None:
    row = {
        "question_id": 81,
        "category": "math",
        "turns": ["What is 2 + 3?", "And times 4?"],
        "reference": ["5", "20"],
    }
    item = coerce_item(row)
    assert (item.id, item.instruction) == ("81", "What is 2 + 3?")
    assert item.extra["turns"] == row["turns"]  # kept for the second turn
    assert item.reference == "5"  # the first turn's
    # a two-turn row is answered as a conversation (tests/test_multiturn.py): no note on it
    assert item.turns == row["turns"]
    assert "note" not in item.extra
    one_turn = coerce_item({"question_id": 82, "category": "math", "turns": ["What is 1 + 1?"]})
    assert "note" not in one_turn.extra
    assert one_turn.turns is None
    assert one_turn.reference is None


def test_an_alpaca_rows_output_is_its_reference() -> None:
    item = coerce_item({"instruction": "Classify.", "input": "Penguin", "output": "Bird"})
    assert (item.instruction, item.input, item.extra) == (
        "Classify.",
        "Penguin",
        {"output": "Bird"},
    )
    assert item.reference == "Bird"
    assert coerce_item({"instruction": "Say hi.", "input": "", "output": ""}).reference is None


def test_our_layout_keeps_reference_choices_and_answer() -> None:
    item = coerce_item(
        {
            "id": "q1",
            "category": "geo",
            "instruction": "Capital of France?",
            "reference": "Paris is the capital.",
            "choices": ["London", "Paris"],
            "answer": "B",
        }
    )
    assert item.extra == {
        "category": "geo",
        "reference": "Paris is the capital.",
        "choices": ["London", "Paris"],
        "answer": "B",
    }
    assert item.reference == "Paris is the capital."


def test_choices_are_listed_under_the_instruction_once() -> None:
    row = {"id": "q", "instruction": "Capital of France?", "choices": ["London", "Paris"]}
    item = coerce_item({**row, "answer": "Paris"})
    assert item.instruction == (
        "Capital of France?\n\nA. London\nB. Paris\n\nAnswer with the letter of the correct option."
    )
    # read back (an errors file gives the folded instruction and the fields again): not twice
    again = coerce_item({**item.extra, "instruction": item.instruction, "id": item.id})
    assert again.instruction == item.instruction
    # also with options that span lines
    lines = {"id": "q", "instruction": "Which?", "choices": ["one\ntwo", "three"], "answer": "A"}
    folded = coerce_item(lines)
    assert folded.instruction.count("A. one\ntwo") == 1
    assert (
        coerce_item({**lines, "instruction": folded.instruction}).instruction == folded.instruction
    )
    # an instruction that lists its options already is left alone
    listed = "Capital of France?\n(A) London\n(B) Paris"
    assert coerce_item({**row, "instruction": listed}).instruction == listed


def test_precedence_instruction_then_text_then_turns_and_id_then_question_id() -> None:
    item = coerce_item(
        {"instruction": "Ours", "text": "Vicuna's", "turns": ["MT's"], "id": "a", "question_id": 1}
    )
    assert (item.instruction, item.id) == ("Ours", "a")
    assert item.extra == {"text": "Vicuna's", "turns": ["MT's"], "question_id": 1}
    assert coerce_item({"text": "Vicuna's", "turns": ["MT's"]}).instruction == "Vicuna's"


@pytest.mark.parametrize(
    ("answer", "letter"),
    [("B", "B"), ("b", "B"), (" C ", "C"), ("paris", "B"), ("Rome", "C"), (0, "A"), (2, "C")],
)
def test_the_gold_option_is_a_letter_a_text_or_an_index(answer: object, letter: str) -> None:
    assert choice_letter(["London", "Paris", "Rome"], answer) == letter


@pytest.mark.parametrize("answer", ["D", "Berlin", 3, -1, True, 1.5, None, ""])
def test_an_answer_that_is_no_option_is_none(answer: object) -> None:
    assert choice_letter(["London", "Paris", "Rome"], answer) is None


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"question_id": 1}, "no instruction .*'text'.*'turns'"),
        ({"question_id": 1, "text": 5}, "'text' must be a string"),
        ({"question_id": 1, "turns": "Hi?"}, "'turns' must be an array of strings, not a string"),
        ({"question_id": 1, "turns": []}, "'turns' is empty"),
        ({"question_id": 1, "turns": ["Hi?", 2]}, "entry 2 is a number"),
        ({"question_id": 1, "turns": ["Hi?", " "]}, "'turns' entry 2 is empty"),
        ({"question_id": [1], "text": "Hi?"}, "'question_id' must be a string or an integer"),
        ({"instruction": "Hi?", "choices": ["x", "y"], "answer": "z"}, "none of the 2 choices"),
        ({"instruction": "Hi?", "choices": ["x", "y"], "answer": 2}, "letter \\(A to B\\)"),
    ],
)
def test_bad_rows_say_what_is_wrong(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        coerce_item(row)


def test_each_bad_row_is_reported_with_its_line_and_the_rest_is_read(tmp_path: Path) -> None:
    rows: list[object] = [
        {"question_id": 1, "category": "generic", "text": "Vicuna?"},
        {"question_id": 2, "turns": []},
        {"question_id": 3, "category": "math", "turns": ["MT?", "Again?"]},
        {"instruction": "Alpaca?", "input": "", "output": "Yes."},
        {"id": "4", "instruction": "Ours?", "choices": ["a", "b"], "answer": "c"},
        {"id": "5", "instruction": "Ours too?", "choices": ["a", "b"], "answer": "b"},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    read = list(read_items(path))
    problems = [r for r in read if isinstance(r, InputProblem)]
    assert [(p.line, p.reason) for p in problems] == [
        (2, "'turns' is empty"),
        (
            5,
            "'answer' 'c' is none of the 2 choices: give its letter (A to B), its text, or its "
            "0-based index",
        ),
    ]
    items = [r for r in read if isinstance(r, DatasetItem)]
    assert [i.instruction.splitlines()[0] for i in items] == [
        "Vicuna?",
        "MT?",
        "Alpaca?",
        "Ours too?",
    ]


@pytest.mark.parametrize(
    ("name", "count", "first_id", "references"),
    [
        ("vicuna_questions.jsonl", 5, "1", 0),
        ("mt_bench_questions.jsonl", 4, "101", 3),
        ("alpaca_data.json", 4, None, 4),
        ("gold_questions.jsonl", 6, "g01", 6),
        ("multiple_choice.jsonl", 20, "mc01", 20),
        ("questions.jsonl", 30, "q01", 0),
    ],
)
def test_every_example_file_reads_cleanly(
    name: str, count: int, first_id: str | None, references: int
) -> None:
    read = list(read_items(EXAMPLES / name))
    assert not [r for r in read if isinstance(r, InputProblem)]
    items = [r for r in read if isinstance(r, DatasetItem)]
    assert len(items) == count
    assert items[0].id == first_id
    # rows with a reference, an Alpaca output or a gold answer are judged with a reference
    assert sum(i.reference is not None for i in items) == references


def test_the_reference_of_a_gold_answer_names_the_option() -> None:
    assert reference_answer({"choices": ["London", "Paris"], "answer": 1}) == "B. Paris"
    assert reference_answer({"answer": 42}) == "42"
    # an explicit reference wins over the gold answer, and an empty one counts as none
    assert reference_answer({"reference": "Paris.", "answer": "Paris"}) == "Paris."
    assert reference_answer({"reference": "", "output": "  "}) is None


@pytest.mark.parametrize(
    "row",
    [
        {"instruction": "Hi?", "reference": 5},
        {"instruction": "Hi?", "choices": ["A"], "answer": "A"},
        {"instruction": "Hi?", "choices": "A, B", "answer": "A"},
        {"instruction": "Hi?", "answer": ["4", "four"]},
        {"instruction": "Hi?", "answer": {"value": "4", "aliases": ["four"]}},  # TriviaQA's
        {"instruction": "Hi?", "answer": True},
        {"instruction": "Hi?", "answer": "  "},
        {"instruction": "Hi?", "turns": "not a list, and not needed"},
    ],
)
def test_other_layouts_fields_are_kept_not_refused(row: dict[str, Any]) -> None:
    """Evaluation fields of another dataset's shape never stop a row from being answered:
    the row keeps them as given, its instruction untouched, and nothing is scored from them."""
    item = coerce_item(row)
    assert item.instruction == "Hi?"
    assert {k: v for k, v in item.extra.items()} == {
        k: v for k, v in row.items() if k != "instruction"
    }
