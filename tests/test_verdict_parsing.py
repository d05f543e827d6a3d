"""Reading verdicts: a corpus in the forms real judges write, and what happens when none reads.

The judge is asked for the two scores on the first line, so that line wins over any number in
the explanation; labelled scores and numbered lines are read only when it holds no pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from expertprompting import cli
from expertprompting._evaluation.judge import Judge
from expertprompting._evaluation.report import build_report
from expertprompting._evaluation.verdicts import PairVerdict, Verdict, parse_verdict
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))

GPT4_EXPLANATION = (
    "Both Assistant 1 and Assistant 2 provided helpful, relevant, and accurate answers. "
    "Assistant 1's answer was more detailed, covering 6 strategies with examples, while "
    "Assistant 2 gave 4. Overall, Assistant 1's response was more informative, earning a "
    "score of 9, while Assistant 2's response was slightly less detailed, earning a score of 8."
)
READABLE: list[tuple[str, tuple[float, float]]] = [
    # -- the asked-for form: the pair on the first line, whatever the explanation says
    ("9 8.5\n" + GPT4_EXPLANATION, (9, 8.5)),
    ("8 7", (8, 7)),
    ("8,7", (8, 7)),
    ("8, 7\nAssistant 1 was more precise.", (8, 7)),
    ("8 7\nAssistant 1 listed 7 points while Assistant 2 gave 5.", (8, 7)),
    ("6 9\nAssistant 1: 3 mistakes. Assistant 2: 1 mistake.", (6, 9)),
    ("7 8\nAssistant 1 gets 4/10 for style but Assistant 2 gets 9/10 for it.", (7, 8)),
    ("9 8\nAssistant 1 received 2 of my 3 criteria; Assistant 2 received 1.", (9, 8)),
    ("8 7\n\n1. 3\n2. 4", (8, 7)),
    ("5 9\nAssistant 1 = 3 steps, Assistant 2 = 6 steps.", (5, 9)),
    ("9 9\nBoth assistants deserve a high score of 9.", (9, 9)),
    ("8/10 and 6/10\nThe first answer is more complete.", (8, 6)),
    ("8/10 7/10", (8, 7)),
    ("8 / 10, 6 / 10", (8, 6)),
    ("8 out of 10 and 6 out of 10", (8, 6)),
    ("Scores: 9, 7", (9, 7)),
    ("Score: 9 7\nWell argued.", (9, 7)),
    ("My scores: 7 and 9", (7, 9)),
    ("Assistant 1 vs Assistant 2: 8 vs 6", (8, 6)),
    ("**Scores:** 8 and 6", (8, 6)),
    ("**8 6**\nAssistant 1 is clearer.", (8, 6)),
    ("**8** **6**", (8, 6)),
    ("`7 5`", (7, 5)),
    ("## 8 7", (8, 7)),
    ("> 8 7", (8, 7)),
    ("- 8 7", (8, 7)),
    ("[8, 7]", (8, 7)),
    ("(8, 7)", (8, 7)),
    ('{"scores": [8, 7]}', (8, 7)),
    ("7.5 8\nClose call.", (7.5, 8)),
    ("8.5, 9.0", (8.5, 9)),
    ("10 10", (10, 10)),
    ("10/10 9/10", (10, 9)),
    ("1 1\nBoth answers are off-topic.", (1, 1)),
    ("9 8 Assistant 1 explained more.", (9, 8)),
    ("8 7.", (8, 7)),
    ("8\t7", (8, 7)),
    ("8 \u2013 6", (8, 6)),
    ("8 vs. 6", (8, 6)),
    ("\n\n  5 5  ", (5, 5)),
    # -- labelled pairs on the first line
    ("Assistant 1: 8, Assistant 2: 7", (8, 7)),
    ("Assistant 1: 8 Assistant 2: 7", (8, 7)),
    ("Assistant 1: 8/10; Assistant 2: 6/10\nAssistant 1 covered 5 topics.", (8, 6)),
    ("Assistant 1 receives a score of 8, while Assistant 2 receives a 6.", (8, 6)),
    ("I would rate Assistant 1 an 8 and Assistant 2 a 6.", (8, 6)),
    ("Score for Assistant 1: 7; Score for Assistant 2: 8", (7, 8)),
    ("Scores: Assistant 1 - 6, Assistant 2 - 8", (6, 8)),
    ("Assistant 1 = 7, Assistant 2 = 7", (7, 7)),
    ("Assistant 1 (8/10) is stronger than Assistant 2 (6/10).", (8, 6)),
    ('{"assistant_1": 8, "assistant_2": 7}', (8, 7)),
    # -- labelled pairs on lines of their own
    ("Assistant 1: 8\nAssistant 2: 6", (8, 6)),
    ("Assistant 1: 8\nAssistant 2: 6\n\nAssistant 1 listed 7 points, Assistant 2 gave 5.", (8, 6)),
    ("Assistant 2: 6/10\nAssistant 1: 8/10", (8, 6)),
    ("**Assistant 1:** 9/10\n**Assistant 2:** 7/10", (9, 7)),
    ("Assistant 1 score: 7\nAssistant 2 score: 9", (7, 9)),
    ("Assistant 1 gets 6/10.\nAssistant 2 gets 9/10.", (6, 9)),
    ("Assistant 1: 7.5\nAssistant 2: 8.5", (7.5, 8.5)),
    (
        "### Assistant 1\nScore: 8/10\nClear and correct.\n\n### Assistant 2\nScore: 5/10\nVague.",
        (8, 5),
    ),
    ("Answer 1: 7\nAnswer 2: 8", (7, 8)),
    ("Response 1 - 9\nResponse 2 - 6", (9, 6)),
    ("Both are decent.\nAssistant 1 deserves 7 and Assistant 2 deserves 8.", (7, 8)),
    ("1. Assistant 1: 9\n2. Assistant 2: 8", (9, 8)),
    # -- a lead-in line, then the pair
    ("Here are my scores:\n8 7\nAssistant 1 is better.", (8, 7)),
    ("Scores:\n\n9 6", (9, 6)),
    ("Scores:\n1. 8\n2. 7", (8, 7)),
    # -- numbered lines (the bundled model's form) and bare lines
    ("1. 9\n2. 8", (9, 8)),
    ("1. 9\n2. 8\nAssistant 1 is more detailed.", (9, 8)),
    ("1. 7/10\n2. 9/10", (7, 9)),
    ("1) 6\n2) 8", (6, 8)),
    ("1. 9 - clear and accurate\n2. 6 - misses the point", (9, 6)),
    ("1. 9\nThe first answer is right.\n2. 4\nThe second is wrong.", (9, 4)),
    ("1. 9\n2. 8\nAssistant 1 - 3 paragraphs, Assistant 2 - 2.", (9, 8)),
    ("1. 9/10 (Assistant 1)\n2. 7/10 (Assistant 2)", (9, 7)),
    ("Let me compare the answers.\n1. 8\n2. 6", (8, 6)),
    ("9\n8\nAssistant 1 is better.", (9, 8)),
    # -- no pair on the first line: labelled scores are scores only when worded as scores
    (GPT4_EXPLANATION, (9, 8)),
    ("Assistant 1 provides 3 examples. I'd rate Assistant 1 a 7 and Assistant 2 a 6.", (7, 6)),
    ("Assistant 1: 8\nClear.\nAssistant 2: 6\nVague.", (8, 6)),
    ("Assistant 1's answer: 8 | Assistant 2's answer: 7", (8, 7)),
    ("Assistant 1 scored 7 points and Assistant 2 scored 9 points.", (7, 9)),
]
UNREADABLE: list[str | None] = [
    # -- no scores: prose, refusals, other formats
    "",
    None,
    "   \n  ",
    "I'm sorry, but I can't evaluate these answers.",
    "Both answers are equally good.",
    "Assistant 1 is better.",
    "Both Assistant 1 and Assistant 2 deserve high marks.",
    "I'd say 8",
    "7\nthe second is better",
    "[[A]]",
    "As an AI language model, I cannot assign scores to 2 answers.",
    # -- numbers that are not the two scores
    "Assistant 1 listed 7 points while Assistant 2 gave 5.",
    "Assistant 1 covered 3 topics and Assistant 2 covered 4 topics.",
    "1. Helpfulness: 9\n2. Relevance: 8\n3. Accuracy: 9",
    "1. 9\n2. 8\n3. 7",
    "8, 7, 9",
    "1. 5 tips are given by the first answer\n2. 3 tips by the second",
    "Assistant 1: The answer lists 3 tips.\nAssistant 2: Lists 5.",
    "Assistant 1: 3 tips\nAssistant 2: 5 tips",
    "Both Assistant 1 and Assistant 2 receive 9.",
    "Assistant 1: 8",
    # -- out of range or another scale
    "11 3",
    "0 5",
    "8 15",
    "10.5 9",
    "-3 5",
    "Assistant 1: 12/10\nAssistant 2: 8/10",
    "4/5 3/5",
    "80 70",
    "85/100 70/100",
    "1. 0\n2. 8",
]


def test_the_corpus_is_large_and_distinct() -> None:
    texts = [text for text, _ in READABLE] + UNREADABLE
    assert len(texts) >= 60
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize(("text", "scores"), READABLE)
def test_verdicts_read_as_the_judge_meant(text: str, scores: tuple[float, float]) -> None:
    assert parse_verdict(text) == scores


@pytest.mark.parametrize("text", UNREADABLE)
def test_verdicts_without_two_scores_read_as_none(text: str | None) -> None:
    assert parse_verdict(text) is None


def test_the_first_line_wins_over_the_explanation() -> None:
    # the case: the explanation's numbers sit next to the labels, the scores do not
    text = "8 6\nAssistant 1 listed 7 points while Assistant 2: 5."
    assert parse_verdict(text) == (8, 6)
    assert parse_verdict(text.split("\n", 1)[1]) is None  # without the first line: a count


# -- nothing readable: judge and compare say so and exit 1 ---------------------------------------
PROSE = "Both answers have their merits; Assistant 1 listed 3 points and Assistant 2 listed 5."


def _rows(path: Path, answers: dict[str, str]) -> None:
    rows = [
        {"id": key, "instruction": f"Question {key}?", "answer": a} for key, a in answers.items()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


def _judge_command(tmp_path: Path, server: FakeOpenAIServer) -> list[str]:
    _rows(tmp_path / "a.jsonl", {"1": "alpha", "2": "beta"})
    _rows(tmp_path / "b.jsonl", {"1": "gamma", "2": "delta"})
    command = [EXE, "judge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    command += ["--judge-model", "gpt-4o", "--base-url", server.base_url, "--no-progress"]
    return [*command, "-o", str(tmp_path / "v.jsonl")]


def test_judge_exits_1_when_no_verdict_could_be_read(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.responder = lambda req: Reply(content=PROSE)
    done = subprocess.run(
        _judge_command(tmp_path, server), capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "2 unparsed of 2" in done.stdout  # the report is still printed
    (error,) = [line for line in done.stderr.splitlines() if "error:" in line]
    assert "no verdict could be read" in error
    assert "gpt-4o is not following the score format" in error
    assert "--judge-model" in error
    assert str(tmp_path / "v.jsonl") in error
    assert "too small" not in error


def test_judge_reads_the_numbered_form_and_exits_0(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.responder = lambda req: Reply(content="1. 9\n2. 4\nThe first one is right.")
    command = [*_judge_command(tmp_path, server), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["ties"], report["unparsed"], report["unparsed_verdicts"]) == (2, 0, 0)
    assert "error" not in done.stderr


def test_one_readable_verdict_is_enough_to_exit_0(server: FakeOpenAIServer, tmp_path: Path) -> None:
    def one_readable(req: RecordedRequest) -> Reply:
        shown_first = req.messages[0]["content"].split("### Answer from Assistant 1\n")[1]
        return Reply(content="7 5" if shown_first.startswith("alpha") else PROSE)

    server.responder = one_readable
    done = subprocess.run(
        _judge_command(tmp_path, server), capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "1 unparsed of 2" in done.stdout


def _unparsed_pair(id: str) -> PairVerdict:
    verdicts = [Verdict(order=o, raw=PROSE, scores=None, attempts=2) for o in ("AB", "BA")]
    return PairVerdict(id=id, question="Q?", verdicts=verdicts)


def test_the_bundled_judge_is_named_as_too_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # what SmolLM2-135M does as a judge, without spending minutes running it
    def judged(self: Judge, *args: object, **options: object) -> object:
        return build_report("a", "b", [_unparsed_pair("1"), _unparsed_pair("2")])

    monkeypatch.setattr(Judge, "judge_files", judged)
    _rows(tmp_path / "a.jsonl", {"1": "alpha"})
    _rows(tmp_path / "b.jsonl", {"1": "gamma"})
    argv = ["judge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "-o", "v.jsonl"]
    code = cli.main([*argv, "--judge-model", "local", "--no-progress"])
    assert code == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "no verdict could be read" in error
    assert "bundled SmolLM2-135M model is too small to judge" in error
    assert "--judge-model" in error


def _compare_world(req: RecordedRequest) -> Reply:
    text = req.messages[-1]["content"]
    if "[Agent Description]:" in text:
        return Reply(content="You are a seasoned expert.")
    if "### Answer from Assistant 1" in text:
        return Reply(content=PROSE)  # a judge that ignores the format
    return Reply(content="An answer.")


def test_compare_exits_1_and_notes_it_in_the_report_when_no_verdict_could_be_read(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.responder = _compare_world
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(json.dumps({"id": f"q{i}", "instruction": f"Q{i}?"}) + "\n" for i in range(2)),
        encoding="utf-8",
    )
    out = tmp_path / "cmp"
    command = [EXE, "compare", str(questions), "--strategies", "vanilla,expert", "-o", str(out)]
    command += ["--model", "gpt-4o-mini", "--judge-model", "gpt-4o", "--base-url", server.base_url]
    command += ["--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 1, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if "error:" in line]
    assert "no verdict could be read" in error
    assert "gpt-4o is not following the score format" in error
    assert str(out / "verdicts-expert-vs-vanilla.jsonl") in error
    assert "rerun the same command" not in done.stderr  # nothing failed: a rerun changes nothing
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "No verdict could be read for expert vs vanilla" in report
