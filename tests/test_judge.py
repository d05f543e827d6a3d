"""The position-fair judge: parsing, scoring, the report's arithmetic, and runs over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expertprompting._evaluation.judge import Judge, match_rows
from expertprompting._evaluation.report import build_report
from expertprompting._evaluation.verdicts import PairVerdict, Verdict, parse_verdict, score_pair
from expertprompting._method.errors import ConfigurationError, TemplateError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply


@pytest.mark.parametrize(
    ("text", "scores"),
    [
        ("8 7", (8, 7)),
        ("8, 7\nBecause...", (8, 7)),
        ("8/10 7/10", (8, 7)),
        ("Assistant 1: 8 Assistant 2: 7", (8, 7)),
        ("Assistant 1 gets 6/10.\nAssistant 2 gets 9/10.", (6, 9)),
        ("**9 4**", (9, 4)),
        ("Scores: 7.5, 8", (7.5, 8)),
        ("10 1", (10, 1)),
        ("\n\n  5 5  ", (5, 5)),
    ],
)
def test_verdicts_that_can_be_read(text: str, scores: tuple[float, float]) -> None:
    assert parse_verdict(text) == scores


@pytest.mark.parametrize(
    "text",
    ["", "Both answers are fine.", "11 3", "0 5", "7\nthe second is better", None, "I'd say 8"],
)
def test_verdicts_that_cannot(text: str | None) -> None:
    assert parse_verdict(text) is None


def _v(order: str, scores: tuple[float, float] | None) -> Verdict:
    return Verdict(order=order, raw="x", scores=scores)  # type: ignore[arg-type]


def test_scores_are_averaged_over_both_orders() -> None:
    # AB: A=8, B=6; BA: B=7, A=7 -> A 7.5, B 6.5
    a, b, outcome, consistent = score_pair([_v("AB", (8, 6)), _v("BA", (7, 7))])
    assert (a, b, outcome, consistent) == (7.5, 6.5, "win", False)


def test_a_judge_that_prefers_the_second_position_gives_ties() -> None:
    a, b, outcome, consistent = score_pair([_v("AB", (6, 9)), _v("BA", (6, 9))])
    assert (a, b, outcome) == (7.5, 7.5, "tie")
    assert consistent is False


def test_one_readable_order_scores_alone_and_none_is_unparsed() -> None:
    assert score_pair([_v("AB", (4, 8)), _v("BA", None)]) == (4.0, 8.0, "loss", None)
    assert score_pair([_v("AB", None), _v("BA", None)]) == (None, None, "unparsed", None)


def _pair(
    i: int, outcome_scores: list[tuple[str, tuple[float, float] | None]], cat: str
) -> PairVerdict:
    verdicts = [_v(order, s) for order, s in outcome_scores]
    a, b, outcome, consistent = score_pair(verdicts)
    return PairVerdict(
        id=str(i),
        question="q",
        category=cat,
        verdicts=verdicts,
        score_a=a,
        score_b=b,
        outcome=outcome,
        consistent=consistent,
    )


def test_report_arithmetic() -> None:
    pairs = [
        _pair(1, [("AB", (8, 6)), ("BA", (6, 8))], "math"),  # A 8, B 6: win, consistent
        _pair(2, [("AB", (5, 7)), ("BA", (7, 5))], "math"),  # A 5, B 7: loss, consistent
        _pair(3, [("AB", (6, 9)), ("BA", (6, 9))], "code"),  # tie, inconsistent
        _pair(4, [("AB", None), ("BA", None)], "code"),  # unparsed
    ]
    report = build_report("expert", "vanilla", pairs)
    assert (report.wins, report.ties, report.losses, report.unparsed) == (1, 1, 1, 1)
    assert report.unparsed_verdicts == 2
    assert report.adjusted_win_rate == pytest.approx(1.5 / 3)
    assert (report.score_sum_a, report.score_sum_b) == (8 + 5 + 7.5, 6 + 7 + 7.5)
    assert report.score_ratio == pytest.approx(20.5 / 20.5)
    assert report.position_consistency == pytest.approx(2 / 3)
    rows = {r.category: r for r in report.categories}
    assert (rows["math"].wins, rows["math"].losses) == (1, 1)
    assert (rows["code"].ties, rows["code"].unparsed) == (1, 1)
    assert len(report.verdicts) == 4
    keys = set(json.loads(report.model_dump_json()))
    assert {"wins", "ties", "losses", "adjusted_win_rate", "score_ratio"} <= keys
    assert {"position_consistency", "unparsed"} <= keys


def test_a_judge_template_must_show_both_answers() -> None:
    with pytest.raises(TemplateError, match="answer_2"):
        Judge(model="gpt-4o", template="{{ question }} {{ answer_1 }}", api_key="k")


def _answers(path: Path, answers: dict[str, str], category: str = "general") -> None:
    rows = [
        {
            "id": k,
            "instruction": f"Question {k}?",
            "input": "",
            "answer": v,
            "extra": {"category": category},
        }
        for k, v in answers.items()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_second_position_bias_comes_out_all_ties_over_http(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.responder = lambda req: Reply(content="5 9\nThe second answer is better.")
    _answers(tmp_path / "a.jsonl", {"1": "alpha", "2": "beta"})
    _answers(tmp_path / "b.jsonl", {"1": "gamma", "2": "delta", "3": "only in b"})
    judge = Judge(model="gpt-4o", base_url=server.base_url)
    report = judge.judge_files(
        tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "v.jsonl", progress=False
    )
    assert (report.pairs, report.wins, report.ties, report.losses) == (2, 0, 2, 0)
    assert report.position_consistency == 0
    assert len(server.chat_requests) == 4  # each pair in both orders
    shown = [r.messages[0]["content"] for r in server.chat_requests]
    assert sum("Assistant 1\nalpha" in s for s in shown) == 1
    assert sum("Assistant 1\ngamma" in s for s in shown) == 1
    assert all(r.json["temperature"] == 0.0 for r in server.chat_requests)


def test_unreadable_verdicts_are_retried_once_then_unparsed(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    def judge_model(req: RecordedRequest) -> Reply:
        first_answer = req.messages[0]["content"].split("### Answer from Assistant 1\n")[1]
        if first_answer.startswith("alpha"):
            return Reply(content="I cannot decide.")  # AB order: never readable
        return Reply(content="4 8")  # BA order: B=4, A=8

    server.responder = judge_model
    _answers(tmp_path / "a.jsonl", {"1": "alpha"})
    _answers(tmp_path / "b.jsonl", {"1": "gamma"})
    report = Judge(model="gpt-4o", base_url=server.base_url).judge_files(
        tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "v.jsonl", progress=False
    )
    assert len(server.chat_requests) == 3  # AB twice (retried once), BA once
    (pair,) = report.verdicts
    ab = next(v for v in pair.verdicts if v.order == "AB")
    assert (ab.scores, ab.attempts, ab.raw) == (None, 2, "I cannot decide.")
    assert (pair.score_a, pair.score_b, pair.outcome) == (8, 4, "win")
    assert report.unparsed_verdicts == 1


def test_judging_resumes_from_the_verdicts_file(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda req: Reply(content="7 6")
    _answers(tmp_path / "a.jsonl", {str(i): f"a{i}" for i in range(5)})
    _answers(tmp_path / "b.jsonl", {str(i): f"b{i}" for i in range(5)})
    judge = Judge(model="gpt-4o", base_url=server.base_url)
    verdicts = tmp_path / "v.jsonl"
    judge.judge_files(tmp_path / "a.jsonl", tmp_path / "b.jsonl", verdicts, progress=False)
    lines = verdicts.read_text().splitlines()
    verdicts.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20], encoding="utf-8")  # killed
    sent = len(server.chat_requests)
    report = judge.judge_files(tmp_path / "a.jsonl", tmp_path / "b.jsonl", verdicts, progress=False)
    assert len(server.chat_requests) - sent == 4  # two pairs redone, both orders
    assert report.pairs == 5
    assert report.ties == 5  # "7 6" in both orders: each answer averages 6.5
    assert len(verdicts.read_text().splitlines()) == 5


def test_a_verdict_cache_spares_repeat_requests(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda req: Reply(content="8 6")
    _answers(tmp_path / "a.jsonl", {"1": "alpha", "2": "beta"})
    _answers(tmp_path / "b.jsonl", {"1": "gamma", "2": "delta"})
    cache = tmp_path / "verdicts.sqlite"
    first = Judge(model="gpt-4o", base_url=server.base_url, cache=cache)
    first.judge_files(
        tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "v1.jsonl", progress=False
    )
    assert len(server.chat_requests) == 4
    again = Judge(model="gpt-4o", base_url=server.base_url, cache=cache)
    report = again.judge_files(
        tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "v2.jsonl", progress=False
    )
    assert len(server.chat_requests) == 4  # a new verdicts file, but every verdict cached
    assert report.ties == 2


def _rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_rows_without_ids_are_matched_by_instruction_and_input(tmp_path: Path) -> None:
    _rows(
        tmp_path / "a.jsonl",
        [
            {"instruction": "Sum", "input": "1 2", "answer": "3", "category": "math"},
            {"instruction": "Sum", "input": "2 2", "answer": "4"},
            {"instruction": "Only in A", "answer": "x"},
            {"instruction": "Failed in A", "answer": None, "error": "timeout"},
        ],
    )
    _rows(
        tmp_path / "b.jsonl",
        [  # another order, and one row only B has
            {"instruction": "Failed in A", "answer": "y"},
            {"instruction": "Sum", "input": "2 2", "answer": "four"},
            {"instruction": "Sum", "input": "1 2", "answer": "three"},
            {"instruction": "Only in B", "answer": "z"},
        ],
    )
    matched = match_rows(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert [(m[1], m[2], m[3], m[4]) for m in matched] == [
        ("Sum\n\n1 2", "math", "3", "three"),
        ("Sum\n\n2 2", None, "4", "four"),
    ]


def test_files_with_nothing_in_common_are_a_clear_error(tmp_path: Path) -> None:
    _answers(tmp_path / "a.jsonl", {"1": "alpha"})
    _answers(tmp_path / "b.jsonl", {"2": "beta"})
    judge = Judge(model="gpt-4o", base_url="http://127.0.0.1:9/v1", api_key="unused")
    with pytest.raises(ConfigurationError, match=r"No rows of .* match rows of"):
        judge.judge_files(
            tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "v.jsonl", progress=False
        )
    assert not (tmp_path / "v.jsonl").exists()
    with pytest.raises(ConfigurationError, match=r"Cannot read the answers file .*missing\.jsonl"):
        judge.judge_files(
            tmp_path / "a.jsonl", tmp_path / "missing.jsonl", tmp_path / "v.jsonl", progress=False
        )


def test_a_failed_request_is_not_a_verdict_and_a_rerun_judges_it(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    def refuse_gamma(req: RecordedRequest) -> Reply:
        if "gamma" in req.messages[-1]["content"]:
            return Reply(status=400, error_body={"error": {"message": "content policy"}})
        return Reply(content="8 6")

    server.responder = refuse_gamma
    _answers(tmp_path / "a.jsonl", {"1": "alpha", "2": "gamma"})
    _answers(tmp_path / "b.jsonl", {"1": "beta", "2": "delta"})
    judge = Judge(model="gpt-4o", base_url=server.base_url)
    files = (tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "v.jsonl")
    report = judge.judge_files(*files, progress=False)
    assert (report.pairs, report.failed, report.ties, report.unparsed) == (1, 1, 1, 0)
    assert [json.loads(line)["id"] for line in files[2].open()] == ["1"]
    (error,) = [json.loads(line) for line in (tmp_path / "v.errors.jsonl").open()]
    assert error["id"] == "2"
    assert "HTTP 400" in error["error"]
    assert "content policy" in error["error"]
    server.responder = lambda req: Reply(content="8 6")
    sent = len(server.chat_requests)
    again = judge.judge_files(*files, progress=False)
    assert len(server.chat_requests) - sent == 2  # only the failed pair, both orders
    assert (again.pairs, again.failed, again.ties) == (2, 0, 2)
    assert sorted(json.loads(line)["id"] for line in files[2].open()) == ["1", "2"]
    assert (tmp_path / "v.errors.jsonl").read_text() == ""


def test_resuming_verdicts_with_another_judge_is_refused(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.responder = lambda req: Reply(content="7 6")
    _answers(tmp_path / "a.jsonl", {str(i): f"a{i}" for i in range(3)})
    _answers(tmp_path / "b.jsonl", {str(i): f"b{i}" for i in range(3)})
    verdicts = tmp_path / "v.jsonl"
    first = Judge(model="gpt-4o", base_url=server.base_url)
    first.judge_files(tmp_path / "a.jsonl", tmp_path / "b.jsonl", verdicts, progress=False)
    rows = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert {row["judge_model"] for row in rows} == {"gpt-4o"}
    verdicts.write_text("\n".join(verdicts.read_text().splitlines()[:2]) + "\n")
    before = verdicts.read_bytes()
    sent = len(server.chat_requests)
    other = Judge(model="gpt-4o-mini", base_url=server.base_url)
    with pytest.raises(ConfigurationError, match=r"'gpt-4o', not 'gpt-4o-mini'.*another -o"):
        other.judge_files(tmp_path / "a.jsonl", tmp_path / "b.jsonl", verdicts, progress=False)
    assert len(server.chat_requests) == sent  # refused before any request
    assert verdicts.read_bytes() == before
    # the same judge resumes: only the missing pair is judged
    report = first.judge_files(tmp_path / "a.jsonl", tmp_path / "b.jsonl", verdicts, progress=False)
    assert len(server.chat_requests) - sent == 2
    assert report.pairs == 3
