"""Exact metrics: gold answers scored without a judge, with intervals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expertprompting import ExpertPrompter
from expertprompting._datasets.items import LETTERS, InputProblem, coerce_item
from expertprompting._evaluation.accuracy import (
    AccuracyReport,
    GoldScore,
    accuracy_report,
    every_row_has_gold,
    has_gold,
    score_answers,
    score_reply,
)
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

MULTIPLE_CHOICE = Path(__file__).resolve().parent.parent / "examples" / "multiple_choice.jsonl"


@pytest.mark.parametrize(
    ("row", "gold"),
    [
        ({"instruction": "q", "answer": "42"}, True),
        ({"instruction": "q", "answer": 42}, True),
        ({"instruction": "q", "choices": ["x", "y"], "answer": "B"}, True),
        ({"instruction": "q", "choices": ["x", "y"], "answer": 0}, True),
        ({"instruction": "q", "choices": ["x", "y"], "answer": "z"}, False),
        ({"instruction": "q", "choices": "x y", "answer": "A"}, False),
        ({"instruction": "q", "answer": ""}, False),
        ({"instruction": "q", "answer": "the Treaty of Westphalia of 1648"}, True),
        ({"instruction": "q", "answer": "one two three four five six seven eight nine ten"}, True),
        # a long answer is a reference for the judge, not a gold answer to match
        (
            {"instruction": "q", "answer": "one two three four five six seven eight nine ten 11"},
            False,
        ),
        ({"instruction": "q", "answer": "Paris.\nIt is the capital."}, False),
        ({"instruction": "q", "answer": None}, False),
        ({"instruction": "q", "answer": True}, False),
        ({"instruction": "q", "reference": "42"}, False),
        ({"instruction": "q", "output": "42"}, False),
    ],
)
def test_has_gold(row: dict[str, Any], gold: bool) -> None:
    assert has_gold(row) is gold


@pytest.mark.parametrize(
    ("reply", "question", "correct"),
    [
        ("The answer is (B).", {"choices": ["Rome", "Paris"], "answer": "B"}, True),
        ("B", {"choices": ["Rome", "Paris"], "answer": "Paris"}, True),
        ("Paris", {"choices": ["Rome", "Paris"], "answer": 1}, True),
        ("A) Rome", {"choices": ["Rome", "Paris"], "answer": "b"}, False),
        ("Rome or Paris, hard to say.", {"choices": ["Rome", "Paris"], "answer": "B"}, None),
        (None, {"choices": ["Rome", "Paris"], "answer": "B"}, None),
        ("So the answer is 1,000.", {"answer": 1000}, True),
        ("#### 0.5", {"answer": 0.5}, True),
        ("The answer is 7.", {"answer": "8"}, False),
        ("Canberra", {"answer": "Canberra"}, True),
        ("I do not know, it depends on many things.", {"answer": "Canberra"}, None),
    ],
)
def test_score_reply(reply: str | None, question: dict[str, Any], correct: bool | None) -> None:
    assert score_reply(reply, question) is correct


def test_score_reply_needs_a_gold_answer() -> None:
    with pytest.raises(ValueError, match="no gold answer"):
        score_reply("42", {"reference": "42"})


def _write(path: Path, rows: list[Any]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_answers_are_matched_to_gold_answers_by_id(tmp_path: Path) -> None:
    _write(
        tmp_path / "q.jsonl",
        [
            {"id": "1", "category": "math", "instruction": "6 x 7?", "answer": 42},
            {"id": "2", "category": "geo", "instruction": "Capital?", "choices": ["Rome", "Oslo"],
             "answer": "Oslo"},
            {"id": "3", "instruction": "Tell a joke."},  # no gold answer: left out
            {"id": "4", "instruction": "8 x 8?", "answer": "64"},  # never answered: left out
            {"id": "5", "instruction": "1 + 1?", "answer": "2"},
            {"instruction": "No id: 2 + 3?", "answer": "5"},  # matched by its content hash
            {"id": "bad", "instruction": "x", "choices": ["a", "b"], "answer": "c"},  # unusable
        ],
    )  # fmt: skip
    hashed = coerce_item({"instruction": "No id: 2 + 3?", "answer": "5"}).key
    _write(
        tmp_path / "a.jsonl",
        [
            {"id": "5", "answer": None, "error": "timeout"},  # no reply: unreadable
            {"id": "2", "answer": "The answer is B."},
            {"id": "1", "answer": "6 x 7 = 42, so the answer is 42."},
            {"id": "3", "answer": "Knock knock."},
            {"id": hashed, "answer": "It is 6."},
            [1, 2],  # not an answer row
        ],
    )
    problems: list[InputProblem] = []
    scores = score_answers(tmp_path / "a.jsonl", tmp_path / "q.jsonl", on_problem=problems.append)
    assert scores == [  # in the question file's order
        GoldScore(id="1", category="math", correct=True),
        GoldScore(id="2", category="geo", correct=True),
        GoldScore(id="5", category=None, correct=None),
        GoldScore(id=hashed, category=None, correct=False),
    ]
    assert [(Path(p.path).name, p.line) for p in problems] == [("q.jsonl", 7), ("a.jsonl", 6)]


def _scores(pattern: str, category: str | None = None) -> list[GoldScore]:
    """``pattern``: one character a question, ``r`` right, ``w`` wrong, ``u`` unreadable."""
    marks = {"r": True, "w": False, "u": None}
    return [
        GoldScore(id=str(i), category=category, correct=marks[c]) for i, c in enumerate(pattern)
    ]


def test_unreadable_replies_count_against_accuracy() -> None:
    report = accuracy_report({"vanilla": _scores("rrrrrrwwuu")})
    (row,) = report.rows
    assert (row.correct, row.wrong, row.unreadable, row.questions) == (6, 2, 2, 10)
    assert row.accuracy == 0.6  # 6 / 10, not 6 / 8
    assert row.interval is not None
    assert row.interval.estimate == 0.6
    assert row.interval.low < 0.6 < row.interval.high
    assert row.interval.resamples >= 1000


def test_rows_overall_then_per_category_and_differences_against_the_first() -> None:
    base = _scores("rrrrwwwwww", "math") + [
        GoldScore(id=f"g{i}", category="geo", correct=i < 5) for i in range(10)
    ]
    better = _scores("rrrrrrrrrr", "math") + [
        GoldScore(id=f"g{i}", category="geo", correct=i < 5) for i in range(10)
    ]
    report = accuracy_report({"vanilla": base, "expert": better}, seed=3)
    assert [(r.strategy, r.category, r.accuracy) for r in report.rows] == [
        ("vanilla", None, 0.45),
        ("expert", None, 0.75),
        ("vanilla", "geo", 0.5),
        ("expert", "geo", 0.5),
        ("vanilla", "math", 0.4),
        ("expert", "math", 1.0),
    ]
    (diff,) = report.differences
    assert (diff.strategy, diff.baseline, diff.questions, diff.better, diff.worse) == (
        "expert",
        "vanilla",
        20,
        6,
        0,
    )
    assert diff.difference is not None
    assert diff.difference.estimate == pytest.approx(0.3)
    assert diff.difference.low > 0  # six questions won and none lost: a real difference
    assert diff.p_value == pytest.approx(2 / 2**6)
    assert diff.verdict() == "more accurate than vanilla at the 95% level"
    # seeded: the same seed gives the same intervals
    assert accuracy_report({"vanilla": base, "expert": better}, seed=3) == report
    text = report.markdown()
    assert "| expert | math | 10 | 0 | 0 | 100.0% [100.0%, 100.0%] |" in text
    assert "| vanilla | all | 9 | 11 | 0 | 45.0% [" in text
    assert "accuracy difference +30.0 points [" in text
    assert "more accurate than vanilla at the 95% level." in text
    assert "correct / (correct + wrong + unreadable)" in text
    # and the report round-trips through JSON (report.json)
    assert AccuracyReport.model_validate_json(report.model_dump_json()) == report


def test_a_small_difference_is_not_distinguishable_and_only_shared_questions_count() -> None:
    report = accuracy_report(
        {"a": _scores("rrrrrwwwww"), "b": _scores("rrrrrrwwww")[:9]}  # b lacks question 9
    )
    diff = report.differences[0]
    assert (diff.questions, diff.better, diff.worse) == (9, 1, 0)
    assert diff.verdict() == "not distinguishable from a at the 95% level"
    assert diff.p_value == 1.0
    assert "not distinguishable from a" in report.markdown()


def test_every_row_has_gold(tmp_path: Path) -> None:
    assert every_row_has_gold(MULTIPLE_CHOICE)
    _write(tmp_path / "mixed.jsonl", [{"instruction": "q", "answer": "1"}, {"instruction": "r"}])
    assert not every_row_has_gold(tmp_path / "mixed.jsonl")
    _write(tmp_path / "empty.jsonl", [])
    assert not every_row_has_gold(tmp_path / "empty.jsonl")


# -- end to end: the synthetic multiple-choice set, answered by a scripted model ------------------
def _gold() -> dict[str, tuple[str, str, list[str]]]:
    """First line of each question -> (id, gold letter, options)."""
    found = {}
    for line in MULTIPLE_CHOICE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        item = coerce_item(row)
        answer = row["answer"]
        if isinstance(answer, int):
            letter = LETTERS[answer]
        elif answer in row["choices"]:
            letter = LETTERS[row["choices"].index(answer)]
        else:
            letter = answer
        found[row["instruction"]] = (item.key, letter, row["choices"])
    return found


def _scripted(right: int, wrong: int) -> Callable[[RecordedRequest], Reply]:
    """A model that answers the first ``right`` questions (by id) right, the next ``wrong``
    with a wrong letter, and the rest in words nobody can read as a choice."""
    gold = _gold()
    order = sorted(key for key, _, _ in gold.values())

    def respond(req: RecordedRequest) -> Reply:
        text = req.messages[-1]["content"]
        question = next(q for q in gold if q in text)
        key, letter, _ = gold[question]
        rank = order.index(key)
        if rank < right:
            return Reply(content=f"The answer is ({letter}).")
        if rank < right + wrong:
            other = "A" if letter != "A" else "B"
            return Reply(content=f"{other}) is my choice.")
        return Reply(content="I would need to look this up before choosing.")

    return respond


def test_a_model_right_on_a_known_share_gets_exactly_that_accuracy(
    server: FakeOpenAIServer, make_prompter: Callable[..., ExpertPrompter], tmp_path: Path
) -> None:
    ep = make_prompter()
    server.responder = _scripted(right=14, wrong=4)
    ep.generate(MULTIPLE_CHOICE, tmp_path / "vanilla.jsonl", strategy="vanilla", progress=False)
    server.responder = _scripted(right=18, wrong=2)
    ep.generate(MULTIPLE_CHOICE, tmp_path / "static.jsonl", strategy="static", progress=False)
    # every question went out with its options lettered under it
    assert all("\nA. " in r.messages[-1]["content"] for r in server.chat_requests)

    scores = {
        name: score_answers(tmp_path / f"{name}.jsonl", MULTIPLE_CHOICE)
        for name in ("vanilla", "static")
    }
    report = accuracy_report(scores)
    overall = {r.strategy: r for r in report.rows if r.category is None}
    vanilla, static = overall["vanilla"], overall["static"]
    assert (vanilla.correct, vanilla.wrong, vanilla.unreadable) == (14, 4, 2)
    assert vanilla.accuracy == 0.7
    assert vanilla.interval is not None
    assert vanilla.interval.low < 0.7 < vanilla.interval.high
    # about a binomial interval's width on 20 questions
    assert vanilla.interval.low > 0.4
    assert vanilla.interval.high <= 0.9
    assert (static.correct, static.wrong, static.unreadable) == (18, 2, 0)
    assert static.accuracy == 0.9
    # per category: the four categories of the set, five questions each
    categories = {(r.strategy, r.category): r.questions for r in report.rows if r.category}
    assert set(categories.values()) == {5}
    assert len(categories) == 8
    (diff,) = report.differences
    assert (diff.better, diff.worse, diff.questions) == (4, 0, 20)
    assert diff.difference is not None
    assert diff.difference.estimate == pytest.approx(0.2)
    text = report.markdown()
    assert "| vanilla | all | 14 | 4 | 2 | 70.0% [" in text
    # four questions won and none lost: the bootstrap interval leaves out 0, but an exact test
    # cannot tell 4 to 0 from chance (p = 0.125), so the report does not claim a difference
    assert diff.difference.low > 0
    assert diff.p_value == pytest.approx(0.125)
    assert diff.verdict().startswith("not distinguishable from vanilla at the 95% level: ")
    assert "only 4 questions differ, too few for the sign test" in text
