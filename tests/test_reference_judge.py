"""Reference-guided judging: questions with a reference answer show it to the judge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

from expertprompting import ExpertPrompter
from expertprompting._evaluation.judge import Judge, match_rows
from expertprompting._method.errors import TemplateError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

TEMPLATES = Path(__file__).resolve().parent.parent / "expertprompting" / "templates"


def _render(name: str, **values: str) -> str:
    """A built-in template rendered by plain Jinja, as the judge must send it."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    return env.from_string((TEMPLATES / name).read_text(encoding="utf-8")).render(**values).strip()


def _judge(server: FakeOpenAIServer) -> Judge:
    return Judge(model="gpt-4o", base_url=server.base_url, api_key="k")


def test_without_a_reference_the_request_is_the_plain_judges(server: FakeOpenAIServer) -> None:
    judge = _judge(server)
    plain = judge.request("Why is the sky blue?", "Rayleigh.", "Magic.")
    assert plain.messages == [
        {
            "role": "user",
            "content": _render(
                "judge.jinja",
                question="Why is the sky blue?",
                answer_1="Rayleigh.",
                answer_2="Magic.",
            ),
        }
    ]
    assert plain.body() == judge.request("Why is the sky blue?", "Rayleigh.", "Magic.", None).body()
    assert "Reference" not in str(plain.messages)


def test_a_reference_is_shown_to_the_judge(server: FakeOpenAIServer) -> None:
    judge = _judge(server)
    guided = judge.request("What is 6 x 7?", "42", "48", reference="6 x 7 = 42")
    text = guided.messages[0]["content"]
    assert text == _render(
        "judge_reference.jinja",
        question="What is 6 x 7?",
        answer_1="42",
        answer_2="48",
        reference="6 x 7 = 42",
    )
    assert "### Reference answer\n6 x 7 = 42\n" in text
    # the same two-score format as the plain judge, so parse_verdict reads it
    assert "Write the two scores on the first line" in text
    plain = judge.request("What is 6 x 7?", "42", "48")
    assert (guided.max_tokens, guided.model) == (plain.max_tokens, plain.model)


def test_a_reference_template_must_show_the_reference() -> None:
    with pytest.raises(TemplateError, match=r"judge_reference .*\{\{ reference \}\}"):
        Judge(
            model="gpt-4o",
            api_key="k",
            reference_template="{{ question }} {{ answer_1 }} {{ answer_2 }}",
        )
    judge = Judge(
        model="gpt-4o",
        api_key="k",
        reference_template="Q {{ question }} R {{ reference }} 1 {{ answer_1 }} 2 {{ answer_2 }}",
    )
    assert judge.request("q", "a", "b", "r").messages[0]["content"] == "Q q R r 1 a 2 b"


def _questions(path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "ref", "instruction": "Add 2 and 2.", "reference": "2 + 2 = 4"},
        {"question_id": "mt", "category": "math", "turns": ["Halve 10.", "Double it."],
         "reference": ["10 / 2 = 5", "10"]},
        {"id": "alpaca", "instruction": "Name a colour.", "input": "", "output": "Red."},
        {"id": "mc", "instruction": "Capital of Italy?", "choices": ["Rome", "Milan"],
         "answer": "A"},
        {"id": "plain", "instruction": "Tell me a joke."},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _verdict_texts(requests: list[RecordedRequest]) -> dict[str, list[str]]:
    """The judge prompts sent, by the question they judge."""
    found: dict[str, list[str]] = {}
    for req in requests:
        text = req.messages[-1]["content"]
        if "### Question\n" not in text:  # a conversation's: its first turn (test_multiturn.py)
            question = text.split("#### User (turn 1)\n", 1)[1].split("\n\n", 1)[0]
            found.setdefault(question, []).append(text)
            continue
        question = text.split("### Question\n", 1)[1].split("\n\n###", 1)[0]
        found.setdefault(question.splitlines()[0], []).append(text)
    return found


def test_generated_answers_carry_the_reference_to_the_judge(
    server: FakeOpenAIServer, make_prompter: Callable[..., ExpertPrompter], tmp_path: Path
) -> None:
    """End to end: generate copies the question's fields into ``extra``, the judge reads the
    reference from there; rows without one are judged exactly as before."""
    _questions(tmp_path / "q.jsonl")
    ep = make_prompter()
    for strategy in ("vanilla", "static"):
        summary = ep.generate(
            tmp_path / "q.jsonl", tmp_path / f"{strategy}.jsonl", strategy=strategy, progress=False
        )
        assert (summary.done, summary.failed) == (5, 0)
    rows = {
        row["id"]: row
        for row in map(json.loads, (tmp_path / "vanilla.jsonl").read_text().splitlines())
    }
    assert rows["ref"]["extra"]["reference"] == "2 + 2 = 4"
    assert rows["mt"]["extra"]["reference"] == ["10 / 2 = 5", "10"]
    # a two-turn row is answered as a conversation (tests/test_multiturn.py), with no note
    assert rows["mt"]["instruction"] == "Halve 10."
    assert len(rows["mt"]["turns_answers"]) == 2
    assert "note" not in rows["mt"]["extra"]

    matched = {m.id: m for m in match_rows(tmp_path / "static.jsonl", tmp_path / "vanilla.jsonl")}
    assert {k: m.reference for k, m in matched.items()} == {
        "ref": "2 + 2 = 4",
        "mt": "10 / 2 = 5",  # MT-Bench's list: the first turn's
        "alpaca": "Red.",  # Alpaca's output
        "mc": "A. Rome",  # the gold option
        "plain": None,
    }

    server.reset()
    server.responder = lambda req: Reply(content="8 6\nFine.")
    judge = _judge(server)
    report = judge.judge_files(
        tmp_path / "static.jsonl", tmp_path / "vanilla.jsonl", tmp_path / "v.jsonl", progress=False
    )
    assert report.pairs == 5
    sent = _verdict_texts(server.chat_requests)
    assert sorted(sent) == sorted(m.question.splitlines()[0] for m in matched.values())
    for pair in matched.values():
        texts = sent[pair.question.splitlines()[0]]
        assert len(texts) == 2  # both orders
        if pair.reference is None:
            # the plain judge's request, unchanged
            assert sorted(texts) == sorted(
                judge.request(pair.question, first, second).messages[0]["content"]
                for first, second in (
                    (pair.answer_a, pair.answer_b),
                    (pair.answer_b, pair.answer_a),
                )
            )
            assert all("Reference" not in t for t in texts)
        elif pair.turns is not None:  # judged on the whole conversation, each turn's reference
            assert all(f"#### Turn 1\n{pair.reference}\n" in t for t in texts)
        else:
            assert all(f"### Reference answer\n{pair.reference}\n" in t for t in texts)


def test_a_reference_field_of_a_hand_made_answer_row_counts(tmp_path: Path) -> None:
    rows_a = [{"id": "1", "instruction": "2+2?", "answer": "4", "reference": "4"}]
    rows_b = [{"id": "1", "answer": "5"}]
    (tmp_path / "a.jsonl").write_text(json.dumps(rows_a[0]) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps(rows_b[0]) + "\n", encoding="utf-8")
    (pair,) = match_rows(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert pair.reference == "4"
    # the row's own "answer" is the model's reply, never taken as a reference
    (tmp_path / "a.jsonl").write_text(json.dumps({**rows_a[0], "reference": None}) + "\n")
    (pair,) = match_rows(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert pair.reference is None
