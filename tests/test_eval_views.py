"""Notebook views of a comparison: ``_repr_html_`` (a table and the chart, every text escaped)
and ``to_pandas()`` (pandas imported only then, with a clear error when it is missing)."""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import pytest

from expertprompting._evaluation.accuracy import GoldScore, accuracy_report
from expertprompting._evaluation.compare import CompareResult
from expertprompting._evaluation.report import ComparisonReport, build_report, compare_judges
from expertprompting._evaluation.verdicts import Outcome, PairVerdict, Verdict
from expertprompting._method.errors import ConfigurationError


def _pairs(outcomes: list[Outcome], judge: str, long_a: bool = True) -> list[PairVerdict]:
    scores = {"win": (8.0, 5.0), "loss": (5.0, 8.0), "tie": (6.0, 6.0)}
    pairs = []
    for i, outcome in enumerate(outcomes):
        a, b = scores[outcome]
        pairs.append(
            PairVerdict(
                id=f"q{i}",
                question="q",
                category="c",
                verdicts=[Verdict(order="AB", raw="x", scores=(a, b))],
                score_a=a,
                score_b=b,
                outcome=outcome,
                length_a=300 if long_a else 100,
                length_b=150,
                judge_model=judge,
            )
        )
    return pairs


def report(a: str = "expert", judge: str = "gpt-4o", flip: int = 0) -> ComparisonReport:
    loss: list[Outcome] = ["loss"]
    outcomes: list[Outcome] = loss * flip + ["win"] * (14 - flip) + ["tie"] * 2 + loss * 4
    return build_report(a, "vanilla", _pairs(outcomes, judge))


def result(*reports: ComparisonReport) -> CompareResult:
    first, *others = reports
    return CompareResult(
        folder="f",
        strategies=["vanilla", first.a],
        generation={},
        reports=[first],
        judges=[r.judge_model or "" for r in reports],
        other_reports=others,
        agreement=[compare_judges(first, other) for other in others],
    )


def test_a_report_shows_as_a_table_with_intervals_and_the_chart() -> None:
    r = report()
    shown = r._repr_html_()
    assert shown.startswith("<table>")
    assert "<th>adjusted win rate [95%]</th>" in shown
    assert f"<td>{r.adjusted_win_rate_interval}</td>" in shown
    assert f"<td>{r.score_ratio_interval}</td>" in shown
    assert f"<td>{r.length_controlled_interval}</td>" in shown
    assert "<td>14 / 2 / 4 / 0</td>" in shown
    assert "<td>better than vanilla" in shown
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in shown
    assert "<title>adjusted win rate " in shown


def test_every_text_is_escaped() -> None:
    r = build_report("<script>alert(1)</script>", "b&c", _pairs(["win", "loss", "win"], "<judge>"))
    shown = r._repr_html_() + result(r)._repr_html_()
    assert "<script>" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt; vs b&amp;c" in shown
    assert "<judge>" not in shown


def test_a_result_shows_every_judge_and_their_agreement() -> None:
    one, two = report(judge="judge-a"), report(judge="judge-b", flip=3)
    shown = result(one, two)._repr_html_()
    assert "expert vs vanilla (judge judge-a)" in shown
    assert "expert vs vanilla (judge judge-b)" in shown
    assert f"<td>{two.adjusted_win_rate_interval}</td>" in shown
    assert "judge-a and judge-b agree on 85% of 20 questions" in shown
    assert shown.count("<title>adjusted win rate ") == 2


def test_an_accuracy_result_shows_its_table_and_chart() -> None:
    scores = {
        # expert alone right on 15 questions, vanilla alone on none: a clear difference
        "vanilla": [GoldScore(id=str(i), correct=i < 10) for i in range(30)],
        "expert": [GoldScore(id=str(i), correct=i < 25) for i in range(30)],
    }
    accuracy = accuracy_report(scores)
    shown = CompareResult(
        folder="f",
        strategies=["vanilla", "expert"],
        generation={},
        reports=[],
        metric="accuracy",
        accuracy=accuracy,
    )._repr_html_()
    assert "<th>accuracy [95%]</th>" in shown
    row = next(r for r in accuracy.rows if r.strategy == "expert")
    assert f"<td>{row.interval}</td>" in shown
    assert "expert vs vanilla: more accurate than vanilla at the 95% level" in shown
    assert "Accuracy on the gold answers" in shown


# -- to_pandas -----------------------------------------------------------------------------------
class FakeFrame:
    """What the tests need of pandas.DataFrame: the rows and columns it was given."""

    def __init__(self, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        self.rows = rows
        self.columns = columns if columns is not None else list(rows[0]) if rows else []


@pytest.fixture
def fake_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in pandas module (pandas is optional, and not installed for the tests)."""
    module = types.ModuleType("pandas")
    module.DataFrame = FakeFrame  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pandas", module)


def test_to_pandas_without_pandas_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` fail
    for view in (report(), result(report())):
        with pytest.raises(ConfigurationError, match=r"needs pandas: pip install pandas"):
            view.to_pandas()


@pytest.mark.skipif(
    importlib.util.find_spec("pandas") is not None, reason="pandas is installed here"
)
def test_pandas_is_not_needed_to_import_or_show_a_comparison() -> None:
    r = report()
    assert "<table>" in r._repr_html_()
    assert "pandas" not in sys.modules


@pytest.mark.usefixtures("fake_pandas")
def test_a_report_to_pandas_has_a_row_per_question() -> None:
    frame = report().to_pandas()
    assert isinstance(frame, FakeFrame)
    assert frame.columns[:4] == ["id", "category", "outcome", "score_a"]
    assert len(frame.rows) == 20
    assert frame.rows[0]["outcome"] == "win"
    assert (frame.rows[0]["length_a"], frame.rows[0]["length_b"]) == (300, 150)


@pytest.mark.usefixtures("fake_pandas")
def test_a_result_to_pandas_has_a_row_per_comparison_and_judge() -> None:
    one, two = report(judge="judge-a"), report(judge="judge-b", flip=3)
    frame = result(one, two).to_pandas()
    assert isinstance(frame, FakeFrame)
    assert [row["judge_model"] for row in frame.rows] == ["judge-a", "judge-b"]
    first = frame.rows[0]
    interval = one.adjusted_win_rate_interval
    assert interval is not None
    assert (first["adjusted_win_rate"], first["adjusted_win_rate_low"]) == (
        one.adjusted_win_rate,
        interval.low,
    )
    assert first["adjusted_win_rate_high"] == interval.high
    assert first["length_controlled_win_rate"] == one.length_controlled_win_rate
    assert (first["wins"], first["ties"], first["losses"]) == (14, 2, 4)


@pytest.mark.usefixtures("fake_pandas")
def test_an_accuracy_result_to_pandas_has_a_row_per_strategy_and_category() -> None:
    scores = {
        "vanilla": [GoldScore(id=str(i), category="k", correct=i < 5) for i in range(10)],
        "expert": [GoldScore(id=str(i), category="k", correct=i < 8) for i in range(10)],
    }
    frame = CompareResult(
        folder="f",
        strategies=["vanilla", "expert"],
        generation={},
        reports=[],
        metric="accuracy",
        accuracy=accuracy_report(scores),
    ).to_pandas()
    assert [(r["strategy"], r["category"]) for r in frame.rows] == [
        ("vanilla", None),
        ("expert", None),
        ("vanilla", "k"),
        ("expert", "k"),
    ]
    assert frame.rows[1]["accuracy"] == 0.8
    assert frame.rows[1]["accuracy_low"] < 0.8 < frame.rows[1]["accuracy_high"]
