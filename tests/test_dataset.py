"""Reading items, writing rows, repairing and resuming output files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from expertprompting._datasets.items import (
    DatasetItem,
    InputProblem,
    ResultWriter,
    coerce_item,
    content_id,
    read_done_ids,
    read_items,
    repair_jsonl,
)
from expertprompting._method.errors import ConfigurationError


class Question(BaseModel):
    instruction: str
    input: str | None = None
    category: str = "general"


def test_items_from_strings_mappings_and_models() -> None:
    assert coerce_item("Say hi.") == DatasetItem(instruction="Say hi.")
    item = coerce_item({"instruction": "Sum", "input": "1 2", "id": 7, "output": "3"})
    assert (item.instruction, item.input, item.id, item.extra) == (
        "Sum",
        "1 2",
        "7",
        {"output": "3"},
    )
    from_model = coerce_item(Question(instruction="Why?", category="science"))
    assert from_model.extra == {"category": "science"}
    assert coerce_item({"instruction": "x", "input": "  "}).input is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("   ", "empty"),
        ({"input": "x"}, "no instruction"),
        ({"instruction": 5}, "must be a string"),
        ({"instruction": "x", "id": [1]}, "'id' must be"),
        (3.5, "must be a string, a mapping"),
    ],
)
def test_bad_items_say_what_is_wrong(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        coerce_item(value)


def test_ids_are_own_or_a_stable_content_hash() -> None:
    a = coerce_item({"instruction": "Q", "input": "I"})
    assert a.key == content_id("Q", "I")
    assert a.key == coerce_item({"instruction": "Q", "input": "I"}).key
    assert a.key != coerce_item({"instruction": "Q"}).key
    assert coerce_item({"instruction": "Q", "id": "q1"}).key == "q1"


def test_jsonl_with_problems_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"instruction": "one"}\n'
        "\n"
        "{not json\n"
        '{"input": "no instruction"}\n'
        '"just a string"\n'
        '{"instruction": "two", "id": "b"}\n',
        encoding="utf-8",
    )
    rows = list(read_items(path))
    assert [type(r).__name__ for r in rows] == [
        "DatasetItem",
        "InputProblem",
        "InputProblem",
        "DatasetItem",
        "DatasetItem",
    ]
    problems = [r for r in rows if isinstance(r, InputProblem)]
    assert [p.line for p in problems] == [3, 4]
    assert str(problems[0]).startswith(f"{path}:3: not valid JSON")
    assert "no instruction" in problems[1].reason
    items = [r for r in rows if isinstance(r, DatasetItem)]
    assert [i.instruction for i in items] == ["one", "just a string", "two"]


def test_alpaca_json_list_is_streamed_with_line_numbers(tmp_path: Path) -> None:
    rows = [
        {"instruction": f"Task {i}", "input": "" if i % 2 else f"data {i}", "output": "x"}
        for i in range(3000)
    ]
    rows[1500] = {"instruction": "", "input": "", "output": ""}
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(rows, indent=4), encoding="utf-8")
    read = list(read_items(path))
    assert len(read) == 3000
    items = [r for r in read if isinstance(r, DatasetItem)]
    assert items[0].input == "data 0"
    assert items[1].input is None
    assert items[0].extra == {"output": "x"}
    (problem,) = [r for r in read if isinstance(r, InputProblem)]
    text = path.read_text().splitlines()
    assert text[problem.line - 1].strip() == "{"  # the line the bad element starts on
    assert '"instruction": ""' in text[problem.line]


def test_broken_json_list_reports_where(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n {"instruction": "a"},\n {"instruction": "b"\n', encoding="utf-8")
    read = list(read_items(path))
    assert isinstance(read[0], DatasetItem)
    assert isinstance(read[1], InputProblem)
    assert read[1].line == 3


def test_missing_input_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Cannot read the input file"):
        list(read_items(tmp_path / "nope.jsonl"))


def test_repair_cuts_only_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "ans', encoding="utf-8")
    assert repair_jsonl(path) == len('{"id": "c", "ans')
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert repair_jsonl(path) == 0  # already whole
    path.write_text('{"id": "only", "partial', encoding="utf-8")
    repair_jsonl(path)
    assert path.read_text() == ""
    assert repair_jsonl(tmp_path / "absent.jsonl") == 0


def test_writer_appends_flushes_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    with ResultWriter(path) as writer:
        writer.write({"id": "a", "answer": "ä"})
        # flushed: visible to another reader before close
        assert json.loads(path.read_text(encoding="utf-8")) == {"id": "a", "answer": "ä"}
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "b", "answer": "cut')  # a killed run
    assert read_done_ids(path) == {"a"}
    with ResultWriter(path) as writer:  # repairs, then appends
        writer.write({"id": "b", "answer": "whole"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b"]
    assert read_done_ids(path) == {"a", "b"}
