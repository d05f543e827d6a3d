"""Several judges: each judges on its own, the report shows each one's figures and how often
they agree (share of questions with the same outcome, and Cohen's kappa)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from expertprompting import ExpertPrompter
from expertprompting._evaluation.compare import compare, verdicts_name
from expertprompting._evaluation.judge import Judge
from expertprompting._method.errors import ConfigurationError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))
LONG = "Answer at length.\n\n{{ instruction }}"
N = 12
# the judges' made-up names are unknown to the model tables: their warnings are expected here
pytestmark = pytest.mark.filterwarnings("ignore::expertprompting.UnknownModelWarning")


def _number(text: str) -> int:
    return int(re.search(r"Question (\d+):", text)[1])  # type: ignore[index]


def _answer(text: str, which: int) -> str:
    return text.split(f"### Answer from Assistant {which}\n")[1].split("\n\n### ")[0]


def two_judges(req: RecordedRequest) -> Reply:
    """ "long" answers longer except on every third question; judge-a always prefers the longer
    answer, judge-b too except on every fourth question, where it prefers the shorter."""
    text = req.messages[-1]["content"]
    i = _number(text)
    if "### Answer from Assistant 1" not in text:
        long_longer = i % 3 != 0
        long = text.startswith("Answer at length.")
        return Reply(content=" ".join(["word"] * (40 if long == long_longer else 15)))
    picks_longer = not (req.json["model"] == "judge-b" and i % 4 == 0)
    first_longer = len(_answer(text, 1)) > len(_answer(text, 2))
    return Reply(content="8 3" if first_longer == picks_longer else "3 8")


# judge-a: long wins where it is longer (8 of 12), loses the rest (4). judge-b flips questions
# 0, 4 and 8: 7 wins, 5 losses; the judges agree on 9 of 12.
AGREEMENT = 9 / 12
CHANCE = (8 * 7 + 4 * 5) / 12**2
KAPPA = (AGREEMENT - CHANCE) / (1 - CHANCE)


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    rows = [{"id": f"q{i:02d}", "instruction": f"Question {i}: say something."} for i in range(N)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_two_judges_give_two_sets_of_figures_and_their_agreement(
    server: FakeOpenAIServer, questions: Path, tmp_path: Path
) -> None:
    server.responder = two_judges
    ep = ExpertPrompter(
        model="gpt-4o-mini", base_url=server.base_url, api_key="k", strategies={"long": LONG}
    )
    judges = [Judge(model=m, base_url=server.base_url, api_key="k") for m in ("judge-a", "judge-b")]
    out = tmp_path / "cmp"
    result = compare(
        ep, questions, out, strategies=["vanilla", "long"], judge=judges, progress=False
    )
    assert result.judges == ["judge-a", "judge-b"]
    (first,) = result.reports
    (second,) = result.other_reports
    assert (first.judge_model, first.wins, first.losses) == ("judge-a", 8, 4)
    assert (second.judge_model, second.wins, second.losses) == ("judge-b", 7, 5)
    assert first.adjusted_win_rate_interval is not None
    assert second.adjusted_win_rate_interval is not None
    assert second.adjusted_win_rate_interval.estimate == 7 / 12
    # each judge's verdicts in a file of its own; the first keeps the name it always had
    assert first.verdicts_file == str(out / "verdicts-long-vs-vanilla.jsonl")
    assert second.verdicts_file == str(out / "verdicts-long-vs-vanilla.judge-b.jsonl")
    for report in (first, second):
        lines = Path(str(report.verdicts_file)).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        assert {row["judge_model"] for row in rows} == {report.judge_model}
        assert len(rows) == N
    (agreement,) = result.agreement
    assert (agreement.judge_1, agreement.judge_2, agreement.questions) == ("judge-a", "judge-b", N)
    assert agreement.agreement == pytest.approx(AGREEMENT)
    assert agreement.kappa == pytest.approx(KAPPA)

    text = (out / "report.md").read_text(encoding="utf-8")
    assert "judged pairwise by `judge-a` and `judge-b`, each on its own" in text
    assert "| long vs vanilla (judge judge-a) | 8 | 0 | 4 | 0 |" in text
    assert "| long vs vanilla (judge judge-b) | 7 | 0 | 5 | 0 |" in text
    assert "## Do the judges agree?" in text
    assert (
        f"- long vs vanilla: judge-a and judge-b agree on 75% of {N} questions both read "
        f"(Cohen's kappa {KAPPA:.2f})." in text
    )
    assert f"| long vs vanilla (judge judge-b) | {second.adjusted_win_rate_interval} |" in text
    svg = (out / "wtl.svg").read_text(encoding="utf-8")
    assert svg.count("<title>adjusted win rate ") == 2
    assert "judge judge-b" in svg
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["agreement"][0]["kappa"] == pytest.approx(KAPPA)
    assert data["other_reports"][0]["judge_model"] == "judge-b"

    # a rerun reuses both judges' verdicts
    sent = len(server.chat_requests)
    compare(ep, questions, out, strategies=["vanilla", "long"], judge=judges, progress=False)
    assert len(server.chat_requests) == sent


def test_a_judge_named_twice_is_refused(
    server: FakeOpenAIServer, questions: Path, tmp_path: Path
) -> None:
    ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url, api_key="k")
    judge = Judge(model="judge-a", base_url=server.base_url, api_key="k")
    with pytest.raises(ConfigurationError, match="Judge models repeat"):
        compare(ep, questions, tmp_path / "o", strategies=["vanilla", "static"], judge=[judge] * 2)
    # two names that make the same file name are refused as well
    clash = [Judge(model=m, base_url=server.base_url, api_key="k") for m in ("a/b", "a:b")]
    with pytest.raises(ConfigurationError, match="share a file name"):
        compare(ep, questions, tmp_path / "o", strategies=["vanilla", "static"], judge=clash)
    assert server.chat_requests == []


def test_verdict_file_names_are_safe() -> None:
    assert verdicts_name("x", "y") == "verdicts-x-vs-y.jsonl"
    assert verdicts_name("x", "y", 1, "local:/m/x.gguf") == "verdicts-x-vs-y.local_m_x.gguf.jsonl"
    assert verdicts_name("x", "y", 2, "org/model:7b") == "verdicts-x-vs-y.org_model_7b.jsonl"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


def test_judge_command_takes_several_judge_models(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = two_judges
    for name, words in (("long", 40), ("short", 15)):
        rows = [
            {"id": f"q{i}", "instruction": f"Question {i}: x", "answer": " ".join(["w"] * words)}
            for i in range(N)
        ]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [EXE, "judge", str(tmp_path / "long.jsonl"), str(tmp_path / "short.jsonl")]
    command += [
        "--judge-model",
        "judge-a",
        "--judge-model",
        "judge-b",
        "-o",
        str(tmp_path / "v.jsonl"),
    ]
    command += ["--base-url", server.base_url, "--no-progress"]
    done = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    a, b = data["reports"]
    # "long" is always the longer here: judge-a gives 12 wins, judge-b loses questions 0, 4, 8
    assert (a["judge_model"], a["wins"], a["losses"]) == ("judge-a", 12, 0)
    assert (b["judge_model"], b["wins"], b["losses"]) == ("judge-b", 9, 3)
    assert data["agreement"][0]["agreement"] == 0.75
    assert data["agreement"][0]["kappa"] == 0.0  # judge-a's one outcome: no agreement beyond chance
    assert (tmp_path / "v.jsonl").exists()
    assert (tmp_path / "v.judge-b.jsonl").exists()
    # in words: each judge's line, its intervals, and the agreement
    spoken = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
    assert spoken.returncode == 0, spoken.stderr
    assert "long vs short (judge judge-b): 9 wins, 0 ties, 3 losses" in spoken.stdout
    assert "long vs short: adjusted win rate 0.75 [" in spoken.stdout
    assert "long vs short: judge-a and judge-b agree on 75% of 12 questions" in spoken.stdout


def test_compare_command_repeats_judge_model(
    server: FakeOpenAIServer, questions: Path, tmp_path: Path
) -> None:
    server.responder = two_judges
    template = tmp_path / "long.jinja"
    template.write_text(LONG, encoding="utf-8")
    out = tmp_path / "cmp"
    command = [EXE, "compare", str(questions), "--strategies", "vanilla,long", "-o", str(out)]
    command += ["--strategy-template", f"long={template}", "--base-url", server.base_url]
    command += ["--model", "gpt-4o-mini", "--judge-model", "judge-a", "--judge-model", "judge-b"]
    command += ["--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "long vs vanilla (judge judge-a): 8 wins" in done.stdout
    assert "long vs vanilla (judge judge-b): 7 wins" in done.stdout
    assert "judge-a and judge-b agree on 75% of 12 questions" in done.stdout
    assert (out / "verdicts-long-vs-vanilla.judge-b.jsonl").exists()
    twice = [*command[:-1], "--judge-model", "judge-a", "--no-progress"]
    refused = subprocess.run(twice, capture_output=True, text=True, env=_env(), timeout=120)
    assert refused.returncode == 2
    assert "a --judge-model is given twice" in refused.stderr


def test_auto_uses_a_named_judge_even_on_gold_answers() -> None:
    """--metric auto picks accuracy for a file of gold answers, unless a judge is named."""
    from pathlib import Path

    from expertprompting._evaluation.compare import resolve_metric

    gold = Path(__file__).parent.parent / "examples" / "multiple_choice.jsonl"
    assert resolve_metric("auto", gold) == "accuracy"
    assert resolve_metric("auto", gold, judge_named=True) == "judge"
    assert resolve_metric("accuracy", gold, judge_named=True) == "accuracy"
