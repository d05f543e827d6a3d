"""``compare``: strategies answered, judged against the baseline, reported with a chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from expertprompting import ExpertPrompter
from expertprompting._evaluation.compare import compare
from expertprompting._evaluation.judge import Judge
from expertprompting._method.errors import ConfigurationError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))


def world(req: RecordedRequest) -> Reply:
    """Identities, answers (expert answers are longer), and a judge that likes longer answers."""
    text = req.messages[-1]["content"]
    if "[Agent Description]:" in text:
        return Reply(content="You are a seasoned expert.")
    if "### Answer from Assistant 1" in text:
        one = text.split("### Answer from Assistant 1\n")[1].split("\n\n### Answer from")[0]
        two = text.split("### Answer from Assistant 2\n")[1].split("\n\n### Your task")[0]
        return Reply(content=("9 5" if len(one) > len(two) else "5 9") + "\nLonger is better.")
    if text.startswith("You are a seasoned expert."):
        return Reply(content="A long, careful expert answer with many details.")
    return Reply(content="Short answer.")


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    rows = [
        {"id": "q1", "category": "science", "instruction": "Why is the sky blue?"},
        {"id": "q2", "category": "science", "instruction": "Why do leaves change colour?"},
        {"id": "q3", "category": "writing", "instruction": "Write a haiku about rain."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_compare_writes_a_complete_report(
    server: FakeOpenAIServer, questions: Path, tmp_path: Path
) -> None:
    server.responder = world
    ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url)
    judge = Judge(model="gpt-4o", base_url=server.base_url)
    out = tmp_path / "cmp"
    result = compare(
        ep, questions, out, strategies=["vanilla", "expert", "static"], judge=judge, progress=False
    )
    expert, static = result.reports
    assert (expert.a, expert.b) == ("expert", "vanilla")
    assert (expert.wins, expert.ties, expert.losses) == (3, 0, 0)  # longer, in both orders
    assert expert.position_consistency == 1
    assert expert.adjusted_win_rate == 1
    assert expert.score_ratio == pytest.approx(9 / 5)
    assert static.ties + static.wins + static.losses == 3
    assert {c.category for c in expert.categories} == {"science", "writing"}
    files = {p.name for p in out.iterdir()}
    assert {"answers-vanilla.jsonl", "answers-expert.jsonl", "answers-static.jsonl"} <= files
    assert {"verdicts-expert-vs-vanilla.jsonl", "report.md", "report.json", "wtl.svg"} <= files
    svg = (out / "wtl.svg").read_text()
    assert svg.startswith("<svg") and "expert vs vanilla" in svg  # noqa: PT018
    assert "<title>wins: 3</title>" in svg
    report = (out / "report.md").read_text()
    assert "![Wins, ties and losses](wtl.svg)" in report
    assert "| expert vs vanilla | 3 | 0 | 0 | 0 | 100.0% | 180.0% | 100.0% |" in report
    assert "judges prefer longer" in report.lower() or "prefer longer" in report
    # rerunning reuses everything: no new request
    sent = len(server.chat_requests)
    compare(ep, questions, out, strategies=["vanilla", "expert"], judge=judge, progress=False)
    assert len(server.chat_requests) == sent


def test_compare_needs_two_known_strategies(
    server: FakeOpenAIServer, questions: Path, tmp_path: Path
) -> None:
    ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url)
    judge = Judge(model="gpt-4o", base_url=server.base_url)
    with pytest.raises(ConfigurationError, match="at least two"):
        compare(ep, questions, tmp_path, strategies=["expert"], judge=judge)
    with pytest.raises(ConfigurationError, match="Unknown strategy"):
        compare(ep, questions, tmp_path, strategies=["vanilla", "wizard"], judge=judge)


def test_judge_command_prints_the_report_keys(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda req: Reply(content="6 8")  # always prefers position 2
    for name, answer in (("a", "first"), ("b", "second")):
        rows = [
            {"id": f"q{i}", "instruction": f"Q{i}", "answer": f"{answer} {i}"} for i in range(4)
        ]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    command = [EXE, "judge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    command += ["--judge-model", "gpt-4o", "--base-url", server.base_url, "--json", "--no-progress"]
    command += ["-o", str(tmp_path / "v.jsonl")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    wanted = {"wins", "ties", "losses", "adjusted_win_rate", "score_ratio"}
    assert wanted | {"position_consistency", "unparsed"} <= set(report)
    assert (report["wins"], report["ties"], report["losses"]) == (0, 4, 0)
    assert report["adjusted_win_rate"] == 0.5
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 4


@pytest.mark.local_model
@pytest.mark.timeout(900)
def test_compare_on_the_bundled_model_reports_what_its_judge_wrote(
    questions: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = tmp_path / "local"
    command = [EXE, "compare", str(questions), "--strategies", "vanilla,expert", "-o", str(out)]
    command += ["--max-tokens", "48", "--seed", "1", "--no-progress", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=850)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    (report,) = result["reports"]
    assert report["pairs"] == 3
    # The tiny model rarely writes the two scores; when it writes none, compare says so.
    nothing_read = report["unparsed"] == report["pairs"]
    assert done.returncode == (1 if nothing_read else 0), done.stderr
    if nothing_read:
        assert "bundled SmolLM2-135M model is too small to judge" in done.stderr
        assert "Traceback" not in done.stderr
    assert report["wins"] + report["ties"] + report["losses"] + report["unparsed"] == 3
    verdicts = [json.loads(line) for line in (out / "verdicts-expert-vs-vanilla.jsonl").open()]
    raw = [v for pair in verdicts for v in pair["verdicts"]]
    assert len(raw) == 6
    unreadable = [v for v in raw if v["scores"] is None]
    assert report["unparsed_verdicts"] == len(unreadable)
    assert all(v["attempts"] == 2 for v in unreadable)  # each retried once before giving up
    assert (out / "report.md").read_text().startswith("# Strategy comparison")
    assert (out / "wtl.svg").exists()


def test_compare_command_takes_a_strategy_of_ours(
    server: FakeOpenAIServer, questions: Path, tmp_path: Path
) -> None:
    server.responder = world
    template = tmp_path / "terse.jinja"
    template.write_text("Answer in one word.\n\n{{ instruction }}", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = tmp_path / "cmp"
    command = [EXE, "compare", str(questions), "--strategies", "vanilla,terse", "-o", str(out)]
    command += ["--strategy-template", f"terse={template}", "--base-url", server.base_url]
    command += ["--model", "gpt-4o-mini", "--judge-model", "gpt-4o", "--json", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)["reports"]
    assert (report["a"], report["b"], report["pairs"]) == ("terse", "vanilla", 3)
    rows = [json.loads(line) for line in (out / "answers-terse.jsonl").open()]
    assert {row["strategy"] for row in rows} == {"terse"}
    terse = [r for r in server.chat_requests if r.messages[-1]["content"].startswith("Answer in")]
    assert len(terse) == 3


def test_compare_reports_its_gaps_and_a_rerun_fills_them(
    server: FakeOpenAIServer, questions: Path, tmp_path: Path
) -> None:
    with questions.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "q4", "category": "writing"}\nnot json\n')

    def haiku_refused(req: RecordedRequest) -> Reply:
        if (
            "haiku" in req.messages[-1]["content"]
            and "### Answer from" not in req.messages[-1]["content"]
        ):
            return Reply(status=400, error_body={"error": {"message": "no poems today"}})
        return world(req)

    server.responder = haiku_refused
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = tmp_path / "cmp"
    command = [EXE, "compare", str(questions), "-o", str(out), "--base-url", server.base_url]
    command += ["--model", "gpt-4o-mini", "--judge-model", "gpt-4o", "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 1, first.stderr
    assert "vanilla: 1 answers failed" in first.stderr
    assert "expert: 2 input rows unusable" in first.stderr
    assert "rerun the same command" in first.stderr
    report = (out / "report.md").read_text()
    assert "## Gaps" in report
    assert "| expert vs vanilla | 2 | 0 | 0 |" in report  # the haiku is not compared yet
    assert "| vanilla | 2 | 1 | 2 |" in report
    server.responder = world
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    report = (out / "report.md").read_text()
    assert "| expert vs vanilla | 3 | 0 | 0 |" in report
    assert "answers failed" not in report
    assert "input rows unusable" in report  # bad rows stay bad; noted, not fatal


def test_judge_command_exits_1_when_pairs_could_not_be_judged(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.responder = lambda req: Reply(status=400)
    for name in ("a", "b"):
        rows = [{"id": "q1", "instruction": "Q", "answer": name}]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    command = [EXE, "judge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    command += ["--judge-model", "gpt-4o", "--base-url", server.base_url, "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "1 pairs could not be judged" in done.stderr
    assert "a.verdicts.errors.jsonl" in done.stderr
    assert "0 unparsed of 0" in done.stdout
