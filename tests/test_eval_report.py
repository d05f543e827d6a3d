"""The report of ``compare``: intervals on every figure, length control, and gold answers.

The headline check is the issue's: one strategy answers longer on most questions but not all
and is otherwise no better, and a synthetic judge prefers the longer answer nine times in ten.
End to end through ``compare`` (a FakeOpenAIServer plays the answering model and the judge),
the raw adjusted win rate must come out well above 0.5, the length-controlled one near 0.5,
and report.md must flag the disagreement.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from expertprompting import ExpertPrompter
from expertprompting._evaluation.compare import CompareResult, compare
from expertprompting._evaluation.judge import Judge
from expertprompting._evaluation.report import (
    ComparisonReport,
    build_report,
    wtl_svg,
)
from expertprompting._evaluation.verdicts import Outcome, PairVerdict, Verdict
from expertprompting._method.errors import ConfigurationError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))
LONG = "Answer at length.\n\n{{ instruction }}"  # the strategy whose answers run longer


# -- the length-biased synthetic world -----------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Question i: how many words each strategy answers with, and whether the judge picks the
    longer answer (nine times in ten) or the shorter one."""

    long_words: int
    vanilla_words: int
    picks_longer: bool


def plans(n: int, seed: int) -> list[Plan]:
    """The "long" strategy is longer on about 80% of the questions by 80-300 words; otherwise
    the two are alike (the same generator as tests/test_eval_stats.py's ``length_biased``)."""
    rng = random.Random(seed)
    made = []
    for _ in range(n):
        base, extra = rng.randint(100, 400), rng.randint(80, 300)
        long_longer = rng.random() < 0.8
        a, b = (base + extra, base) if long_longer else (base, base + extra)
        made.append(Plan(a, b, rng.random() < 0.9))
    return made


def _question_number(text: str) -> int:
    found = re.search(r"Question (\d+):", text)
    assert found, text
    return int(found[1])


def _answer_of(text: str, which: int) -> str:
    rest = text.split(f"### Answer from Assistant {which}\n")[1]
    return rest.split("\n\n### ")[0]


def length_biased_world(table: list[Plan]):  # type: ignore[no-untyped-def]
    def respond(req: RecordedRequest) -> Reply:
        text = req.messages[-1]["content"]
        if "### Answer from Assistant 1" in text:
            one, two = len(_answer_of(text, 1).split()), len(_answer_of(text, 2).split())
            plan = table[_question_number(text)]
            first_longer = one > two
            prefer_first = first_longer == plan.picks_longer
            return Reply(content=("8 4" if prefer_first else "4 8") + "\nBecause.")
        plan = table[_question_number(text)]
        words = plan.long_words if text.startswith("Answer at length.") else plan.vanilla_words
        return Reply(content=" ".join(["word"] * words))

    return respond


def write_questions(path: Path, n: int) -> Path:
    rows = [
        {
            "id": f"q{i:03d}",
            "category": "even" if i % 2 == 0 else "odd",
            "instruction": (f"Question {i}: tell me about topic {i}."),
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


N = 200
# The synthetic draw. On 200 questions the length-controlled rate scatters around 0.5 with a
# standard deviation of about 0.065 (tests/test_eval_stats.py shows it centred over many draws);
# this draw gives 0.52 (raw 0.745), seed 1 would give 0.60 (raw 0.735).
SEED = 7


@pytest.fixture(scope="module")
def length_biased_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CompareResult, Path, int]:
    """One compare run over the 200-question length-biased world (shared by the tests)."""
    folder = tmp_path_factory.mktemp("lengthbias")
    questions = write_questions(folder / "questions.jsonl", N)
    with FakeOpenAIServer() as server:
        server.responder = length_biased_world(plans(N, seed=SEED))
        ep = ExpertPrompter(
            model="gpt-4o-mini", base_url=server.base_url, api_key="k", strategies={"long": LONG}
        )
        judge = Judge(model="gpt-4o", base_url=server.base_url, api_key="k")
        out = folder / "cmp"
        result = compare(
            ep, questions, out, strategies=["vanilla", "long"], judge=judge, progress=False
        )
        sent = len(server.chat_requests)
        # a rerun reuses every answer and verdict, lengths included
        again = compare(
            ep, questions, out, strategies=["vanilla", "long"], judge=judge, progress=False
        )
        assert len(server.chat_requests) == sent
        assert again.reports[0].model_dump() == result.reports[0].model_dump()
    return result, out, sent


def test_a_length_biased_judge_is_caught_by_the_length_controlled_win_rate(
    length_biased_run: tuple[CompareResult, Path, int],
) -> None:
    result, _, _ = length_biased_run
    (report,) = result.reports
    assert (report.a, report.b, report.pairs, report.unparsed) == ("long", "vanilla", N, 0)
    raw = report.adjusted_win_rate_interval
    lc = report.length_controlled_interval
    assert raw is not None
    assert lc is not None
    # the raw figure credits "long" with the judge's taste for length...
    assert raw.estimate == report.adjusted_win_rate
    assert raw.estimate > 0.65
    assert raw.low > 0.5
    # ...which the length-controlled figure takes out
    assert abs(lc.estimate - 0.5) < 0.1
    assert not lc.excludes(0.5)
    assert report.length_controlled_win_rate == lc.estimate
    assert raw.resamples >= 1000
    assert lc.resamples + lc.skipped >= 1000
    # lengths, in the answering model's tokens ("word word ..." is one token a word)
    assert report.length_a is not None
    assert report.length_b is not None
    assert report.length_a.answers == report.length_b.answers == N
    table = plans(N, seed=SEED)
    assert report.length_a.mean == pytest.approx(sum(p.long_words for p in table) / N, abs=1)
    assert report.length_a.mean > report.length_b.mean + 100
    assert report.sign_test_p is not None
    assert report.sign_test_p < 0.001
    assert report.length_check() is not None


def test_report_md_says_it_in_plain_words_and_flags_the_length(
    length_biased_run: tuple[CompareResult, Path, int],
) -> None:
    result, out, _ = length_biased_run
    (report,) = result.reports
    text = (out / "report.md").read_text(encoding="utf-8")
    raw, lc = report.adjusted_win_rate_interval, report.length_controlled_interval
    assert raw is not None
    assert lc is not None
    assert f"long vs vanilla: adjusted win rate {raw}: better than vanilla at the 95% level" in text
    assert (
        f"long vs vanilla: length-controlled win rate {lc}: not distinguishable from a tie" in text
    )
    assert "long vs vanilla: sign test of" in text
    # the intervals table
    assert f"| long vs vanilla | {raw} | " in text
    # the flag replaces the old generic warning
    flags = [line for line in text.splitlines() if line.startswith("- **Length check**")]
    assert len(flags) == 1
    assert "better than vanilla" in flags[0]
    assert "not distinguishable from a tie" in flags[0]
    assert "trust the length-controlled one" in flags[0]
    assert re.search(r"\| long \| 200 \| \d+ \| \d+ \|", text)  # the per-strategy length table
    assert "2000 resamples, seed 0" in text


def test_report_json_and_the_chart_carry_the_intervals(
    length_biased_run: tuple[CompareResult, Path, int],
) -> None:
    result, out, _ = length_biased_run
    (report,) = result.reports
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (saved,) = data["reports"]
    for key in ("adjusted_win_rate_interval", "score_ratio_interval", "length_controlled_interval"):
        interval = saved[key]
        assert interval["low"] <= interval["estimate"] <= interval["high"]
        assert interval["level"] == 0.95
    assert saved["adjusted_win_rate"] == report.adjusted_win_rate  # the old field is kept
    assert saved["sign_test_p"] == report.sign_test_p
    assert CompareResult.model_validate(data).reports[0] == report
    svg = (out / "wtl.svg").read_text(encoding="utf-8")
    assert f"<title>adjusted win rate {report.adjusted_win_rate_interval} (95% interval)" in svg
    assert f"<title>length-controlled win rate {report.length_controlled_interval} (95%" in svg
    assert "<title>wins: " in svg


def test_verdict_rows_keep_the_lengths_and_old_rows_are_recounted(
    length_biased_run: tuple[CompareResult, Path, int], tmp_path: Path
) -> None:
    result, out, _ = length_biased_run
    rows = [json.loads(line) for line in (out / "verdicts-long-vs-vanilla.jsonl").open()]
    assert len(rows) == N
    assert all(isinstance(r["length_a"], int) and isinstance(r["length_b"], int) for r in rows)
    # a verdicts file from before lengths were stored: judge_files recounts from the answers
    old = tmp_path / "old.jsonl"
    for row in rows:
        del row["length_a"], row["length_b"]
    old.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with FakeOpenAIServer() as server:  # answers nothing: every verdict is in the file
        server.responder = lambda req: Reply(status=500)
        judge = Judge(model="gpt-4o", base_url=server.base_url, api_key="k")
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url, api_key="k")
        report = judge.judge_files(
            out / "answers-long.jsonl",
            out / "answers-vanilla.jsonl",
            old,
            a_name="long",
            b_name="vanilla",
            progress=False,
            counter=ep.counter,
        )
        assert server.chat_requests == []
    assert report.length_a == result.reports[0].length_a
    assert report.length_controlled_interval == result.reports[0].length_controlled_interval


# -- the report's arithmetic ---------------------------------------------------------------------
def _pair(
    i: int, outcome: Outcome, length_a: int | None = 100, length_b: int | None = 100
) -> PairVerdict:
    a, b = {"win": (8.0, 6.0), "loss": (6.0, 8.0), "tie": (7.0, 7.0)}.get(outcome, (None, None))
    scores = None if a is None or b is None else (a, b)
    return PairVerdict(
        id=str(i),
        question="q",
        verdicts=[Verdict(order="AB", raw="x", scores=scores)],
        score_a=a,
        score_b=b,
        outcome=outcome,
        length_a=length_a,
        length_b=length_b,
        judge_model="j",
    )


def _pairs(wins: int, ties: int, losses: int) -> list[PairVerdict]:
    win: list[Outcome] = ["win"]
    tie: list[Outcome] = ["tie"]
    loss: list[Outcome] = ["loss"]
    outcomes = win * wins + tie * ties + loss * losses
    return [_pair(i, o) for i, o in enumerate(outcomes)]


def test_intervals_are_seeded() -> None:
    pairs = _pairs(30, 10, 20)
    one, two = build_report("x", "y", pairs, seed=3), build_report("x", "y", pairs, seed=3)
    assert one.adjusted_win_rate_interval == two.adjusted_win_rate_interval
    other = build_report("x", "y", pairs, seed=4)
    assert other.adjusted_win_rate_interval != one.adjusted_win_rate_interval
    assert other.adjusted_win_rate_interval is not None
    assert other.adjusted_win_rate_interval.estimate == one.adjusted_win_rate == 35 / 60
    assert one.seed == 3
    with pytest.raises(ConfigurationError, match="at least 1000"):
        build_report("x", "y", pairs, resamples=100)


@pytest.mark.parametrize(
    ("counts", "words"),
    [
        ((45, 5, 10), "better than y at the 95% level"),
        ((10, 5, 45), "worse than y at the 95% level"),
        ((20, 5, 18), "not distinguishable from a tie"),
    ],
)
def test_findings_say_whether_a_difference_is_distinguishable(
    counts: tuple[int, int, int], words: str
) -> None:
    report = build_report("x", "y", _pairs(*counts))
    interval = report.adjusted_win_rate_interval
    assert interval is not None
    first = report.findings()[0]
    assert first == f"x vs y: adjusted win rate {interval}: {words}"


def test_the_score_ratio_and_the_sign_test_read_in_words() -> None:
    report = build_report("x", "y", _pairs(45, 5, 10))
    ratio = report.score_ratio_interval
    assert ratio is not None
    assert ratio.estimate == report.score_ratio
    assert ratio.low > 1
    findings = report.findings()
    assert f"x vs y: score ratio {ratio}: x scores higher than y at the 95% level" in findings
    sign = findings[3]
    assert sign.startswith("x vs y: sign test of 45 wins against 10 losses (55 decided): p = ")
    assert "rare when neither is better" in sign
    even = build_report("x", "y", _pairs(10, 0, 9)).findings()[3]
    assert "common when neither is better" in even
    none = build_report("x", "y", _pairs(0, 4, 0))
    assert none.sign_test_p is None
    assert "no decided pair" in none.findings()[3]


def test_no_scored_pair_gives_no_interval_and_says_so() -> None:
    report = build_report("x", "y", [_pair(i, "unparsed") for i in range(5)])
    assert report.adjusted_win_rate_interval is None
    assert report.length_controlled_interval is None
    assert report.findings()[0] == "x vs y: adjusted win rate n/a (no scored pair)"
    assert report.length_check() is None


def test_length_check_flags_a_gap_even_when_both_rates_agree_on_the_side() -> None:
    """Both intervals above 0.5, but raw and length-controlled differ by more than 0.1."""
    rng = random.Random(5)
    pairs = []
    for i in range(300):
        longer = rng.random() < 0.5
        # A wins 60% at equal length and almost always when longer
        outcome: Outcome = (
            "win" if (longer and rng.random() < 0.97) or rng.random() < 0.6 else ("loss")
        )
        pairs.append(_pair(i, outcome, 400 if longer else 200, 200))
    report = build_report("x", "y", pairs)
    raw, lc = report.adjusted_win_rate_interval, report.length_controlled_interval
    assert raw is not None
    assert lc is not None
    assert raw.low > 0.5
    assert lc.low > 0.5
    assert raw.estimate - lc.estimate > 0.1
    check = report.length_check()
    assert check is not None
    assert "differ by" in check
    # the same preferences without a length difference: nothing to flag
    flat = build_report("x", "y", [_pair(i, p.outcome, 300, 300) for i, p in enumerate(pairs)])
    assert flat.length_check() is None


def test_lengths_are_left_out_where_unknown() -> None:
    pairs = [_pair(0, "win", 300, 100), _pair(1, "loss", None, None), _pair(2, "win", 200, 100)]
    report = build_report("x", "y", pairs)
    assert report.length_a is not None
    assert (report.length_a.answers, report.length_a.mean, report.length_a.median) == (
        2,
        250.0,
        250.0,
    )


def test_old_report_json_still_loads() -> None:
    """A report.json written before intervals and lengths existed."""
    old = {
        "a": "expert",
        "b": "vanilla",
        "pairs": 3,
        "wins": 3,
        "ties": 0,
        "losses": 0,
        "unparsed": 0,
        "failed": 0,
        "unparsed_verdicts": 0,
        "input_problems": 0,
        "adjusted_win_rate": 1.0,
        "score_sum_a": 27.0,
        "score_sum_b": 15.0,
        "score_ratio": 1.8,
        "score_ratio_b_over_a": 0.55,
        "position_consistency": 1.0,
        "categories": [],
        "verdicts": [
            {
                "id": "q1",
                "question": "Why?",
                "category": None,
                "verdicts": [{"order": "AB", "raw": "9 5", "scores": [9, 5]}],
                "score_a": 9,
                "score_b": 5,
                "outcome": "win",
                "consistent": None,
            }
        ],
    }
    report = ComparisonReport.model_validate(old)
    assert report.adjusted_win_rate_interval is None
    assert report.verdicts[0].length_a is None
    result = CompareResult.model_validate(
        {"folder": "f", "strategies": ["vanilla", "expert"], "generation": {}, "reports": [old]}
    )
    assert result.judges == []
    assert result.all_reports == [report]
    assert "expert vs vanilla" in wtl_svg(result.reports)  # draws without intervals


# -- exact metrics: gold answers, no judge -------------------------------------------------------
def _mc_rows(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"m{i:02d}",
            "category": "odd" if i % 2 else "even",
            "instruction": f"Item {i}: which option is right?",
            "choices": ["alpha", "beta", "gamma", "delta"],
            "answer": "ABCD"[i % 4],
        }
        for i in range(n)
    ]


def mc_world(right: dict[str, set[int]]):  # type: ignore[no-untyped-def]
    """Answers "The answer is X": right on the items ``right[strategy]`` lists, else wrong
    (never a judge verdict: the accuracy metric must not call one)."""

    def respond(req: RecordedRequest) -> Reply:
        text = req.messages[-1]["content"]
        assert "### Answer from" not in text, "a judge was called"
        i = int(re.search(r"Item (\d+):", text)[1])  # type: ignore[index]
        strategy = "long" if text.startswith("Answer at length.") else "vanilla"
        gold = "ABCD"[i % 4]
        wrong = "ABCD"[(i + 1) % 4]
        return Reply(content=f"The answer is {gold if i in right[strategy] else wrong}.")

    return respond


def test_compare_scores_gold_answers_without_a_judge(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    questions = tmp_path / "mc.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in _mc_rows(20)), encoding="utf-8")
    server.responder = mc_world({"vanilla": set(range(10)), "long": set(range(16))})
    ep = ExpertPrompter(
        model="gpt-4o-mini", base_url=server.base_url, api_key="k", strategies={"long": LONG}
    )
    out = tmp_path / "cmp"
    # metric "auto" (the default): every row has a gold answer, so no judge is needed
    result = compare(ep, questions, out, strategies=["vanilla", "long"], progress=False)
    assert result.metric == "accuracy"
    assert result.reports == []
    assert result.accuracy is not None
    overall = {row.strategy: row for row in result.accuracy.rows if row.category is None}
    assert overall["vanilla"].accuracy == 0.5
    assert overall["long"].accuracy == 0.8
    assert overall["long"].interval is not None
    assert overall["long"].interval.low < 0.8 < overall["long"].interval.high
    assert len(server.chat_requests) == 40  # the answers only
    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# Strategy comparison\n")
    assert "scored against the questions' gold answers (no judge)" in text
    assert result.accuracy.markdown().rstrip("\n") in text
    assert "![Accuracy](wtl.svg)" in text
    svg = (out / "wtl.svg").read_text(encoding="utf-8")
    assert "<title>accuracy 0.80 [" in svg
    # a rerun reuses the answers; report files of the accuracy metric are recognised as ours
    again = compare(ep, questions, out, strategies=["vanilla", "long"], progress=False)
    assert len(server.chat_requests) == 40
    assert again.accuracy == result.accuracy


def test_metric_judge_and_auto_without_gold_need_a_judge(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    questions = write_questions(tmp_path / "q.jsonl", 3)
    ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url, api_key="k")
    with pytest.raises(ConfigurationError, match="compare needs a judge"):
        compare(ep, questions, tmp_path / "o", strategies=["vanilla", "static"])
    with pytest.raises(ConfigurationError, match="not one of judge, accuracy, auto"):
        compare(ep, questions, tmp_path / "o", strategies=["vanilla", "static"], metric="x")  # type: ignore[arg-type]


def test_cli_compare_scores_gold_answers_with_no_judge_and_no_key(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    questions = tmp_path / "mc.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in _mc_rows(8)), encoding="utf-8")
    server.responder = mc_world({"vanilla": {0, 1, 2, 3}, "long": set()})
    template = tmp_path / "long.jinja"
    template.write_text(LONG, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = tmp_path / "cmp"
    command = [EXE, "compare", str(questions), "--strategies", "vanilla,long", "-o", str(out)]
    command += ["--strategy-template", f"long={template}", "--base-url", server.base_url]
    command += ["--model", "gpt-4o-mini", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "vanilla: accuracy 0.50 [" in done.stdout
    assert "long: accuracy 0.00 [" in done.stdout
    assert "long vs vanilla: " in done.stdout
    # --metric judge on the same file asks for a judge; --judge-model with accuracy is refused
    refused = subprocess.run(
        [*command, "--metric", "accuracy", "--judge-model", "gpt-4o"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "--judge-model has nothing to judge with --metric accuracy" in refused.stderr


def test_the_report_names_its_resamples_even_when_nothing_was_scored() -> None:
    from expertprompting._evaluation.compare import CompareResult, render_markdown
    from expertprompting._evaluation.report import RESAMPLES, build_report
    from expertprompting._evaluation.verdicts import PairVerdict, Verdict

    unread = PairVerdict(
        id="q1",
        question="Q?",
        verdicts=[Verdict(order="AB", raw="fine", scores=None)],
    )
    report = build_report("expert", "vanilla", [unread])
    result = CompareResult(
        folder="f", strategies=["vanilla", "expert"], generation={}, reports=[report]
    )
    text = render_markdown(result, "judge-m", "answer-m")
    assert f"over the questions ({RESAMPLES} resamples, seed 0)" in text
