"""Two-turn MT-Bench rows: answered as conversations, judged on the whole conversation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

from expertprompting import ExpertAnswer, ExpertPrompter
from expertprompting._datasets.items import FIRST_TURN_ONLY, coerce_item, output_row
from expertprompting._evaluation.compare import CompareResult, compare, render_markdown
from expertprompting._evaluation.judge import Judge, match_rows
from expertprompting._method.errors import TemplateError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]
TEMPLATES = Path(__file__).resolve().parent.parent / "expertprompting" / "templates"
IDENTITY = "You are a patient maths teacher."
MT: dict[str, Any] = {
    "question_id": 81,
    "category": "math",
    "turns": ["Halve 10.", "Double the result."],
    "reference": ["10 / 2 = 5", "5 x 2 = 10"],
}
ONE: dict[str, Any] = {"question_id": 82, "category": "writing", "turns": ["Write a haiku."]}


def _is_identity(req: RecordedRequest) -> bool:
    return "[Agent Description]:" in str(req.messages[-1]["content"])


def _is_verdict(req: RecordedRequest) -> bool:
    return "impartial reviewer" in str(req.messages[-1]["content"])


def _responder(req: RecordedRequest) -> Reply:
    """Identities, verdicts, and answers that name the question they answer (its last line)."""
    if _is_identity(req):
        return Reply(content=IDENTITY)
    if _is_verdict(req):
        return Reply(content="8 6\nFine.")
    last = str(req.messages[-1]["content"]).strip().splitlines()[-1]
    return Reply(content=f"Answer to: {last}")


def _questions(path: Path, *rows: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def _answers(server: FakeOpenAIServer) -> list[RecordedRequest]:
    return [r for r in server.chat_requests if not _is_identity(r) and not _is_verdict(r)]


def test_generate_answers_the_second_turn_as_a_conversation(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    server.responder = _responder
    ep = make_prompter(cache=False)
    questions = _questions(tmp_path / "q.jsonl", MT, ONE)
    out = tmp_path / "expert.jsonl"
    summary = ep.generate(questions, out, strategy="expert", progress=False, concurrency=1)
    assert (summary.done, summary.failed) == (2, 0)
    # two-turn row: identity, turn 1, turn 2 (the identity is not asked for again)
    assert sum(_is_identity(r) for r in server.chat_requests) == 2
    turn_two = [r for r in _answers(server) if r.messages[-1]["content"] == "Double the result."]
    assert len(turn_two) == 1
    messages = turn_two[0].messages
    # turn 2 goes as the conversation: turn 1 (written under the identity), its answer, turn 2
    assert [m["role"] for m in messages[-3:]] == ["user", "assistant", "user"]
    assert messages[-2]["content"] == "Answer to: Halve 10."
    assert IDENTITY in messages[-3]["content"]
    assert "Halve 10." in messages[-3]["content"]
    assert summary.usage.requests == 5  # 3 for the two-turn row, 2 for the one-turn row

    rows = _rows(out)
    mt, one = rows["81"], rows["82"]
    assert mt["answer"] == "Answer to: Halve 10."  # the first turn's, as old readers expect
    assert mt["turns_answers"] == ["Answer to: Halve 10.", "Answer to: Double the result."]
    assert mt["usage"]["requests"] == 3  # summed over the turns
    assert "note" not in mt["extra"]
    assert mt["extra"]["turns"] == MT["turns"]
    # a one-turn row is written exactly as before: no new field, two requests
    assert "turns_answers" not in one
    assert one["usage"]["requests"] == 2
    assert list(one) == [
        "id", "instruction", "input", "expert_identity", "answer", "model", "strategy",
        "usage", "identity_cached", "truncated", "requested_model", "fingerprint", "extra",
    ]  # fmt: skip

    # resume: finished rows are not redone
    server.reset()
    again = ep.generate(questions, out, strategy="expert", progress=False)
    assert (again.done, again.already_done) == (0, 2)
    assert server.chat_requests == []


def test_a_one_turn_item_sends_what_answer_sends(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    """The first turn is answered as ever: the same request bodies as ep.answer."""
    server.responder = _responder
    ep = make_prompter(cache=False)
    (result,) = ep.answer_many([ONE], progress=False)
    many = [r.json for r in server.chat_requests]
    server.reset()
    server.responder = _responder
    ep.answer("Write a haiku.")
    assert many == [r.json for r in server.chat_requests]
    assert isinstance(result, ExpertAnswer)
    assert result.turns_answers is None


@pytest.mark.parametrize("strategy", ["vanilla", "static"])
def test_answer_many_answers_every_turn_with_one_request_each(
    server: FakeOpenAIServer, make_prompter: Make, strategy: str
) -> None:
    server.responder = _responder
    ep = make_prompter(cache=False)
    three = {**MT, "turns": [*MT["turns"], "Now add 1."]}
    (result,) = ep.answer_many([three], strategy=strategy, progress=False)
    assert isinstance(result, ExpertAnswer), result
    assert result.turns_answers == [
        "Answer to: Halve 10.",
        "Answer to: Double the result.",
        "Answer to: Now add 1.",
    ]
    assert result.answer == result.turns_answers[0]
    assert (result.usage.requests, len(result.requests)) == (3, 3)
    last = server.chat_requests[-1].messages
    assert [m["content"] for m in last if m["role"] == "assistant"] == [
        "Answer to: Halve 10.",
        "Answer to: Double the result.",
    ]
    assert last[-1] == {"role": "user", "content": "Now add 1."}


def test_multi_expert_answers_the_first_turn_only_with_the_note(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    ep = make_prompter(cache=False, n_experts=2)
    server.script(Reply(content='["You are A.", "You are B."]'))  # then the default echo
    out = tmp_path / "multi.jsonl"
    summary = ep.generate(
        _questions(tmp_path / "q.jsonl", MT), out, strategy="multi-expert", progress=False
    )
    assert (summary.done, summary.failed) == (1, 0), summary
    (row,) = _rows(out).values()
    assert "turns_answers" not in row
    assert row["extra"]["note"] == FIRST_TURN_ONLY
    assert all("Double the result." not in json.dumps(r.messages) for r in server.chat_requests)


def test_the_note_is_the_answer_rows_not_the_items() -> None:
    item = coerce_item(MT)
    assert "note" not in item.extra
    assert item.turns == MT["turns"]
    answer = ExpertAnswer(
        instruction="Halve 10.", expert_identity=None, answer="5", model="m", strategy="vanilla"
    )
    assert output_row(item, answer)["extra"]["note"] == FIRST_TURN_ONLY
    whole = answer.model_copy(update={"turns_answers": ["5", "10"]})
    # a retried row of an older run loses a note that is no longer true
    old = coerce_item({**MT, "note": FIRST_TURN_ONLY})
    row = output_row(old, whole)
    assert row["turns_answers"] == ["5", "10"]
    assert "note" not in row["extra"]
    assert coerce_item({**ONE}).turns is None
    # an item read back from an errors file names its instruction; its turns still count
    retried = coerce_item({"instruction": "Halve 10.", "id": "81", **MT})
    assert retried.turns == MT["turns"]


def _render(name: str, **values: Any) -> str:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    return env.from_string((TEMPLATES / name).read_text(encoding="utf-8")).render(**values).strip()


def test_the_judge_sees_both_turns_and_both_assistants(server: FakeOpenAIServer) -> None:
    judge = Judge(model="gpt-4o", base_url=server.base_url, api_key="k")
    request = judge.conversation_request(
        ["Halve 10.", "Double it."], ["5", "10"], ["6", "12"], ["10 / 2 = 5", None]
    )
    text = request.messages[0]["content"]
    assert text == _render(
        "judge_multiturn.jinja",
        turns=["Halve 10.", "Double it."],
        answers_1=["5", "10"],
        answers_2=["6", "12"],
        references=["10 / 2 = 5", None],
    )
    one = text.index("### Conversation with Assistant 1")
    two = text.index("### Conversation with Assistant 2")
    assert (
        text.index("#### Assistant 1 (turn 2)\n10")
        < two
        < text.index("#### Assistant 2 (turn 2)\n12")
    )
    assert one < text.index("#### User (turn 2)\nDouble it.") < two
    assert "#### Turn 1\n10 / 2 = 5" in text
    assert "#### Turn 2" not in text
    assert "for its answer to the last question (turn 2)" in text
    assert "Write the two scores on the first line" in text  # parse_verdict's format
    plain = judge.request("Halve 10.", "5", "6")
    assert (request.max_tokens, request.model) == (plain.max_tokens, plain.model)
    without = judge.conversation_request(["a", "b"], ["1", "2"], ["3", "4"])
    assert "Reference" not in without.messages[0]["content"]


def test_a_multiturn_template_must_show_the_turns() -> None:
    with pytest.raises(TemplateError, match=r"judge_multiturn .*\{\{ turns \}\}"):
        Judge(model="gpt-4o", api_key="k", multiturn_template="{{ answers_1 }} {{ answers_2 }}")


def test_a_pair_with_one_side_on_the_first_turn_only_is_judged_on_it(tmp_path: Path) -> None:
    extra = {"turns": MT["turns"], "reference": MT["reference"]}
    a = {
        "id": "81",
        "instruction": "Halve 10.",
        "answer": "5",
        "turns_answers": ["5", "10"],
        "extra": extra,
    }
    b = {
        "id": "81",
        "instruction": "Halve 10.",
        "answer": "6",
        "extra": {**extra, "note": FIRST_TURN_ONLY},
    }
    (tmp_path / "a.jsonl").write_text(json.dumps(a) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps(b) + "\n", encoding="utf-8")
    (pair,) = match_rows(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert (pair.turns, pair.reference) == (None, "10 / 2 = 5")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({**b, "turns_answers": ["6", "12"]}) + "\n", encoding="utf-8"
    )
    (pair,) = match_rows(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert pair.turns == ("Halve 10.", "Double the result.")
    assert (pair.turns_a, pair.turns_b) == (("5", "10"), ("6", "12"))
    assert pair.references == ("10 / 2 = 5", "5 x 2 = 10")
    assert pair.judged_a == "5\n\n10"  # the length figures weigh every turn's answer


def test_compare_judges_the_whole_conversation(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    server.responder = _responder
    ep = make_prompter(cache=False)
    judge = Judge(model="gpt-4o", base_url=server.base_url, api_key="k")
    questions = _questions(tmp_path / "q.jsonl", MT, ONE)
    folder = tmp_path / "cmp"
    result = compare(
        ep, questions, folder, strategies=["vanilla", "expert"], judge=judge, progress=False
    )
    (report,) = result.reports
    assert (report.pairs, report.conversations) == (2, 1)
    assert result.conversations == {"vanilla": 1, "expert": 1}
    assert result.first_turn_only == {"vanilla": 0, "expert": 0}
    verdicts = [r for r in server.chat_requests if _is_verdict(r)]
    assert len(verdicts) == 4  # two questions, both orders
    multi = [r for r in verdicts if "### Conversation with Assistant 1" in r.messages[0]["content"]]
    assert len(multi) == 2
    for req in multi:
        text = req.messages[0]["content"]
        for needle in (
            "#### User (turn 1)\nHalve 10.",
            "#### User (turn 2)\nDouble the result.",
            "Answer to: Double the result.",
            "#### Turn 2\n5 x 2 = 10",
        ):
            assert needle in text
    # the expert's turn 2 was answered under the identity of turn 1, with one request
    expert_rows = _rows(folder / "answers-expert.jsonl")
    assert expert_rows["81"]["usage"]["requests"] == 3
    # the one-turn pair's requests are the plain judge's, byte for byte
    rows_v, rows_e = _rows(folder / "answers-vanilla.jsonl"), expert_rows
    plain = {json.dumps(r.json, sort_keys=True) for r in verdicts if r not in multi}
    expected = {
        json.dumps(judge.request("Write a haiku.", x, y).body(), sort_keys=True)
        for x, y in (
            (rows_e["82"]["answer"], rows_v["82"]["answer"]),
            (rows_v["82"]["answer"], rows_e["82"]["answer"]),
        )
    }
    assert plain == expected
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert "answered as conversations (vanilla 1, expert 1)" in text
    assert "first turn only" not in text
    # a rerun redoes nothing
    server.reset()
    compare(ep, questions, folder, strategies=["vanilla", "expert"], judge=judge, progress=False)
    assert server.chat_requests == []


def test_the_report_counts_rows_answered_on_their_first_turn_only() -> None:
    result = CompareResult(
        folder="cmp",
        strategies=["expert", "multi-expert"],
        generation={},
        reports=[],
        conversations={"expert": 3, "multi-expert": 0},
        first_turn_only={"expert": 0, "multi-expert": 3},
    )
    text = render_markdown(result, "gpt-4o", "gpt-4o-mini")
    assert "answered as conversations (expert 3)" in text
    assert "answered on their first turn only (multi-expert 3;" in text
    quiet = result.model_copy(update={"conversations": {}, "first_turn_only": {}})
    assert "turn" not in render_markdown(quiet, "gpt-4o", "gpt-4o-mini")
