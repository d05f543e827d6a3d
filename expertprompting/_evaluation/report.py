"""The report of a comparison: wins, ties and losses, and how sure each figure is.

:func:`build_report` turns pair verdicts into a :class:`ComparisonReport`: the counts, the
adjusted win rate and score ratio of the paper, and a 95% paired-bootstrap interval
on each, the sign test of wins against losses, answer lengths and the length-controlled win
rate, all from :mod:`.stats`. The report reads itself in plain words (:meth:`findings`,
:meth:`length_check`), draws itself (:func:`wtl_svg`) and shows in a notebook
(``_repr_html_``, ``to_pandas``).
"""

from __future__ import annotations

import html
import importlib
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from .._method.errors import ConfigurationError
from .accuracy import AccuracyReport
from .stats import (
    Interval,
    adjusted_win_rate,
    cohen_kappa,
    judge_agreement,
    lc_interval,
    length_controlled_win_rate,
    length_summary,
    paired_bootstrap,
    score_ratio,
    sign_test,
)
from .verdicts import Outcome, PairVerdict

if TYPE_CHECKING:
    from .._method.tokens import TokenCounter

__all__ = [
    "ACCURACY_TITLE",
    "CategoryRow",
    "ComparisonReport",
    "JudgeAgreement",
    "LengthSummary",
    "accuracy_svg",
    "build_report",
    "compare_judges",
    "figures_html",
    "require_pandas",
    "safe_name",
    "with_lengths",
    "wtl_svg",
]

RESAMPLES = 2000
# Raw and length-controlled win rates further apart than this are flagged even when both
# intervals say the same thing: a tenth of the questions' worth of preference is length.
LC_GAP = 0.1


class CategoryRow(BaseModel):
    category: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    unparsed: int = 0


class LengthSummary(BaseModel):
    """Answer lengths of one side of a comparison, in tokens of the answering model."""

    answers: int = Field(description="Answers measured.")
    mean: float
    median: float


class ComparisonReport(BaseModel):
    """A against B, from A's side.

    Every field added since the first release has a default, so older report.json files load.
    """

    a: str = Field(description="Name of system A (e.g. a strategy).")
    b: str = Field(description="Name of system B.")
    pairs: int = Field(description="Questions judged.")
    wins: int
    ties: int
    losses: int
    unparsed: int = Field(description="Questions with no readable verdict in either order.")
    failed: int = Field(
        default=0,
        description="Questions whose judging failed this run (see the errors file); a rerun "
        "judges them again. Not among the pairs.",
    )
    unparsed_verdicts: int = Field(description="Single verdicts that could not be read.")
    input_problems: int = Field(
        default=0,
        description="Rows of the answer files that could not be judged (not UTF-8, not JSON, "
        "no instruction or answer): skipped, listed in the errors file as file:line.",
    )
    adjusted_win_rate: float | None = Field(
        description="(wins + ties/2) / (wins + ties + losses): A's side; None with no scored pair."
    )
    score_sum_a: float
    score_sum_b: float
    score_ratio: float | None = Field(
        description="score_sum_a / score_sum_b: A's score as a share of B's (the paper's 96%)."
    )
    score_ratio_b_over_a: float | None
    position_consistency: float | None = Field(
        description="Share of pairs read in both orders whose two orders prefer the same answer."
    )
    categories: list[CategoryRow] = Field(default_factory=list)
    verdicts: list[PairVerdict] = Field(default_factory=list, description="Every raw verdict.")
    judge_model: str | None = Field(
        default=None, description="The judge whose verdicts these are (None: older reports)."
    )
    verdicts_file: str | None = Field(default=None, description="Where the verdicts are kept.")
    adjusted_win_rate_interval: Interval | None = Field(
        default=None, description="95% paired-bootstrap interval of the adjusted win rate."
    )
    score_ratio_interval: Interval | None = Field(
        default=None, description="95% paired-bootstrap interval of the score ratio."
    )
    sign_test_p: float | None = Field(
        default=None,
        description="Exact two-sided sign-test p-value of wins against losses (ties left out).",
    )
    length_a: LengthSummary | None = Field(default=None, description="A's answer lengths.")
    length_b: LengthSummary | None = Field(default=None, description="B's answer lengths.")
    length_controlled_win_rate: float | None = Field(
        default=None,
        description="A's win rate read at equal answer length (AlpacaEval 2's logistic model).",
    )
    length_controlled_interval: Interval | None = Field(
        default=None, description="95% paired-bootstrap interval of the length-controlled rate."
    )
    seed: int = Field(default=0, description="Seed of the bootstrap intervals.")
    conversations: int = Field(
        default=0,
        description="Questions of several turns judged on the whole conversation (both sides "
        "answered every turn); the others were judged on one turn.",
    )

    @property
    def nothing_read(self) -> bool:
        """Pairs were judged but not one verdict could be read: the judge ignores the format."""
        return self.pairs > 0 and self.unparsed == self.pairs

    def label(self, *, judge: bool = False) -> str:
        """``"A vs B"``, with the judge model when ``judge`` (reports of several judges)."""
        name = f"{self.a} vs {self.b}"
        return f"{name} (judge {self.judge_model})" if judge and self.judge_model else name

    def findings(self) -> list[str]:
        """Each figure with its interval, and in plain words whether it tells A from B."""
        name = self.label()
        lines = [
            f"{name}: adjusted win rate {_read(self.adjusted_win_rate_interval, self.b, 0.5)}",
            f"{name}: score ratio {_read_ratio(self.score_ratio_interval, self.a, self.b)}",
            f"{name}: length-controlled win rate "
            f"{_read(self.length_controlled_interval, self.b, 0.5)}",
        ]
        decided = self.wins + self.losses
        if self.sign_test_p is None:
            lines.append(f"{name}: sign test: no decided pair (only ties and unparsed)")
        else:
            rare = (
                "a split this uneven is rare when neither is better"
                if self.sign_test_p < 0.05
                else "a split like this is common when neither is better"
            )
            lines.append(
                f"{name}: sign test of {self.wins} wins against {self.losses} losses "
                f"({decided} decided): p = {self.sign_test_p:.3g}, {rare}"
            )
        return lines

    def length_check(self, *, judge: bool = False) -> str | None:
        """Why the raw and length-controlled win rates disagree, or None when they agree.

        They disagree when one tells A from B at the 95% level and the other does not (or
        points the other way), or when they differ by more than 0.1. ``judge``: name the judge
        (reports of several judges).
        """
        raw, lc = self.adjusted_win_rate_interval, self.length_controlled_interval
        if raw is None or lc is None:
            return None
        raw_side, lc_side = _side(raw, 0.5), _side(lc, 0.5)
        gap = abs(raw.estimate - lc.estimate)
        if raw_side == lc_side and gap <= LC_GAP:
            return None
        lengths = ""
        if self.length_a and self.length_b:
            lengths = (
                f" ({self.a}'s answers average {self.length_a.mean:.0f} tokens, "
                f"{self.b}'s {self.length_b.mean:.0f})"
            )
        why = (
            f"the raw adjusted win rate {raw} says {_verdict(raw_side, self.b)}, the "
            f"length-controlled one {lc} says {_verdict(lc_side, self.b)}"
            if raw_side != lc_side
            else f"the raw adjusted win rate {raw} and the length-controlled one {lc} differ by "
            f"{gap:.2f}"
        )
        advice = (
            "much of the raw figure is the judge's taste for longer answers: trust the "
            "length-controlled one"
            if lc.estimate < raw.estimate
            else f"the length-controlled figure is the fairer one: {self.a}'s answers are "
            "held back by their length"
        )
        return f"{self.label(judge=judge)}: {why}{lengths}; {advice}."

    def _repr_html_(self) -> str:
        """A table of the figures with their intervals, then the chart (Jupyter)."""
        return figures_html([self]) + wtl_svg([self])

    def to_pandas(self) -> Any:
        """One row per question: id, category, outcome, scores, lengths, judge (needs pandas)."""
        pd = require_pandas()
        columns = ["id", "category", "outcome", "score_a", "score_b", "length_a", "length_b"]
        columns += ["consistent", "judge_model"]
        rows = [{c: getattr(v, c) for c in columns} for v in self.verdicts]
        return pd.DataFrame(rows, columns=columns)


def _side(interval: Interval | None, null: float) -> int:
    """+1: above ``null`` at the interval's level; -1: below; 0: not distinguishable."""
    if interval is None or not interval.excludes(null):
        return 0
    return 1 if interval.low > null else -1


def _level(interval: Interval) -> str:
    return f"{interval.level:.0%}"


def _shaky(interval: Interval) -> str:
    return " (few questions: most bootstrap samples were undefined)" if interval.shaky else ""


def _verdict(side: int, b: str) -> str:
    return {1: f"better than {b}", -1: f"worse than {b}", 0: "not distinguishable from a tie"}[side]


def _read(interval: Interval | None, b: str, null: float) -> str:
    """``0.62 [0.51, 0.73]: better than B at the 95% level`` (a win rate against ``null``)."""
    if interval is None:
        return "n/a (no scored pair)"
    side = _side(interval, null)
    level = f" at the {_level(interval)} level" if side else ""
    return f"{interval}: {_verdict(side, b)}{level}{_shaky(interval)}"


def _read_ratio(interval: Interval | None, a: str, b: str) -> str:
    if interval is None:
        return "n/a (no pair scored by both)"
    side = _side(interval, 1.0)
    words = {
        1: f"{a} scores higher than {b} at the {_level(interval)} level",
        -1: f"{a} scores lower than {b} at the {_level(interval)} level",
        0: "not distinguishable from equal scores",
    }[side]
    return f"{interval}: {words}{_shaky(interval)}"


def with_lengths(
    pair: PairVerdict, answer_a: str, answer_b: str, counter: TokenCounter
) -> PairVerdict:
    """``pair`` with its answers' lengths in tokens (kept as they are when already counted)."""
    if pair.length_a is not None and pair.length_b is not None:
        return pair
    return pair.model_copy(
        update={"length_a": counter.count_text(answer_a), "length_b": counter.count_text(answer_b)}
    )


def _lengths(values: Sequence[int]) -> LengthSummary | None:
    summary = length_summary(values)
    if summary is None:
        return None
    return LengthSummary(answers=len(values), mean=summary[0], median=summary[1])


def build_report(
    a: str,
    b: str,
    pairs: Sequence[PairVerdict],
    failed: int = 0,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> ComparisonReport:
    """The figures of a comparison from its pair verdicts (``failed``: pairs not judged).

    Intervals are 95% paired bootstraps over the questions with ``resamples`` samples drawn
    with ``seed`` (the same seed gives the same intervals). Lengths and the length-controlled
    win rate use the pairs whose lengths are known.
    """
    count: dict[str, int] = defaultdict(int)
    by_category: dict[str, CategoryRow] = {}
    sum_a = sum_b = 0.0
    both = agree = 0
    for pair in pairs:
        count[pair.outcome] += 1
        if pair.category is not None:
            row = by_category.setdefault(pair.category, CategoryRow(category=pair.category))
            key = {"win": "wins", "tie": "ties", "loss": "losses"}.get(pair.outcome, "unparsed")
            setattr(row, key, getattr(row, key) + 1)
        if pair.score_a is not None and pair.score_b is not None:
            sum_a += pair.score_a
            sum_b += pair.score_b
        if pair.consistent is not None:
            both += 1
            agree += int(pair.consistent)
    scored = count["win"] + count["tie"] + count["loss"]
    outcomes: list[Outcome] = [p.outcome for p in pairs]
    scores = [(p.score_a, p.score_b) for p in pairs]
    measured = [p for p in pairs if p.length_a is not None and p.length_b is not None]
    length_a = [p.length_a for p in measured if p.length_a is not None]
    length_b = [p.length_b for p in measured if p.length_b is not None]
    boot: dict[str, Any] = {"resamples": resamples, "seed": seed}
    lc_outcomes = [p.outcome for p in measured]
    return ComparisonReport(
        a=a,
        b=b,
        pairs=len(pairs),
        wins=count["win"],
        ties=count["tie"],
        losses=count["loss"],
        unparsed=count["unparsed"],
        failed=failed,
        unparsed_verdicts=sum(v.scores is None for p in pairs for v in p.verdicts),
        adjusted_win_rate=(count["win"] + count["tie"] / 2) / scored if scored else None,
        score_sum_a=sum_a,
        score_sum_b=sum_b,
        score_ratio=sum_a / sum_b if sum_b else None,
        score_ratio_b_over_a=sum_b / sum_a if sum_a else None,
        position_consistency=agree / both if both else None,
        categories=sorted(by_category.values(), key=lambda r: r.category),
        verdicts=list(pairs),
        judge_model=next((p.judge_model for p in pairs if p.judge_model), None),
        adjusted_win_rate_interval=paired_bootstrap(outcomes, adjusted_win_rate, **boot),
        score_ratio_interval=paired_bootstrap(scores, score_ratio, **boot),
        sign_test_p=sign_test(count["win"], count["loss"]),
        length_a=_lengths(length_a),
        length_b=_lengths(length_b),
        length_controlled_win_rate=length_controlled_win_rate(lc_outcomes, length_a, length_b),
        length_controlled_interval=lc_interval(lc_outcomes, length_a, length_b, **boot),
        seed=seed,
    )


# -- several judges ------------------------------------------------------------------------------
class JudgeAgreement(BaseModel):
    """How often two judges reach the same outcome on one comparison's questions."""

    a: str
    b: str
    judge_1: str
    judge_2: str
    questions: int = Field(description="Questions both judges read (win, tie or loss).")
    agreement: float | None = Field(description="Share of those with the same outcome.")
    kappa: float | None = Field(description="Cohen's kappa: agreement beyond chance.")

    def sentence(self) -> str:
        if self.agreement is None:
            return f"{self.a} vs {self.b}: {self.judge_1} and {self.judge_2} read no question alike"
        kappa = "n/a" if self.kappa is None else f"{self.kappa:.2f}"
        return (
            f"{self.a} vs {self.b}: {self.judge_1} and {self.judge_2} agree on "
            f"{self.agreement:.0%} of {self.questions} questions both read (Cohen's kappa {kappa})"
        )


def compare_judges(first: ComparisonReport, second: ComparisonReport) -> JudgeAgreement:
    """Agreement of two judges' reports of the same comparison, over the questions both hold."""
    theirs = {v.id: v.outcome for v in second.verdicts}
    common = [v for v in first.verdicts if v.id in theirs]
    ones: list[Outcome] = [v.outcome for v in common]
    twos: list[Outcome] = [theirs[v.id] for v in common]
    read = ("win", "tie", "loss")
    return JudgeAgreement(
        a=first.a,
        b=first.b,
        judge_1=first.judge_model or "judge 1",
        judge_2=second.judge_model or "judge 2",
        questions=sum(x in read and y in read for x, y in zip(ones, twos, strict=True)),
        agreement=judge_agreement(ones, twos),
        kappa=cohen_kappa(ones, twos),
    )


# -- notebook views ------------------------------------------------------------------------------
def require_pandas() -> Any:
    """pandas, imported on first use: it is an optional extra, never required."""
    try:
        # by name: pandas is not a dependency, so neither it nor its stubs need be installed
        return importlib.import_module("pandas")
    except ImportError:
        raise ConfigurationError(
            "to_pandas() needs pandas: pip install pandas "
            '(or pip install "expertprompting[pandas]").'
        ) from None


def _cell(interval: Interval | None, estimate: float | None) -> str:
    if interval is not None:
        return str(interval)
    return "n/a" if estimate is None else f"{estimate:.2f}"


def figures_html(
    reports: Sequence[ComparisonReport], agreements: Sequence[JudgeAgreement] = ()
) -> str:
    """An HTML table of each comparison's figures and 95% intervals (every text escaped)."""
    several = len({r.judge_model for r in reports}) > 1
    head = (
        "comparison",
        "wins / ties / losses / unparsed",
        "adjusted win rate [95%]",
        "score ratio [95%]",
        "length-controlled win rate [95%]",
        "sign test p",
        "mean tokens A / B",
        "reading",
    )
    rows = []
    for r in reports:
        lengths = (
            f"{r.length_a.mean:.0f} / {r.length_b.mean:.0f}" if r.length_a and r.length_b else "n/a"
        )
        cells = (
            r.label(judge=several),
            f"{r.wins} / {r.ties} / {r.losses} / {r.unparsed}",
            _cell(r.adjusted_win_rate_interval, r.adjusted_win_rate),
            _cell(r.score_ratio_interval, r.score_ratio),
            _cell(r.length_controlled_interval, r.length_controlled_win_rate),
            "n/a" if r.sign_test_p is None else f"{r.sign_test_p:.3g}",
            lengths,
            _verdict(_side(r.adjusted_win_rate_interval, 0.5), r.b)
            + ("; length check: see report" if r.length_check() else ""),
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    parts = [
        "<table>",
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
        *rows,
        "</tbody></table>",
    ]
    if agreements:
        parts.append("<p>" + "<br>".join(html.escape(g.sentence()) for g in agreements) + "</p>")
    return "\n".join(parts) + "\n"


# -- the chart -----------------------------------------------------------------------------------
_COLOURS = {"wins": "#2e7d32", "ties": "#9e9e9e", "losses": "#c62828", "unparsed": "#ffb300"}
_RAW_COLOUR, _LC_COLOUR = "#000000", "#1565c0"


def _whisker(interval: Interval, x0: float, span: float, y: float, colour: str, name: str) -> str:
    """An interval on a 0-1 axis: a line from low to high with end caps and a dot."""

    def at(value: float) -> float:
        return x0 + span * min(max(value, 0.0), 1.0)

    low, high, mid = at(interval.low), at(interval.high), at(interval.estimate)
    title = html.escape(f"{name} {interval} ({interval.level:.0%} interval)")
    return (
        f'<g stroke="{colour}" stroke-width="2"><title>{title}</title>'
        f'<line x1="{low:.1f}" y1="{y:.1f}" x2="{high:.1f}" y2="{y:.1f}"/>'
        f'<line x1="{low:.1f}" y1="{y - 4:.1f}" x2="{low:.1f}" y2="{y + 4:.1f}"/>'
        f'<line x1="{high:.1f}" y1="{y - 4:.1f}" x2="{high:.1f}" y2="{y + 4:.1f}"/>'
        f'<circle cx="{mid:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/></g>'
    )


def wtl_svg(reports: Sequence[ComparisonReport], width: int = 720) -> str:
    """A stacked bar per comparison (wins, ties, losses, unparsed) and, beside it, the adjusted
    and length-controlled win rates with their 95% intervals on a 0-1 axis (SVG text)."""
    bar_height, gap, left, top = 30, 16, 190, 56
    panel = 170  # the interval panel on the right
    height = top + len(reports) * (bar_height + gap) + 48
    plot = width - left - panel - 20
    axis_x, axis_span = width - panel + 10, panel - 30
    several = len({r.judge_model for r in reports}) > 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="22" font-weight="bold">Wins, ties and losses against the '
        "baseline</text>",
        f'<text x="{axis_x + axis_span / 2:.1f}" y="22" text-anchor="middle" font-size="11">'
        "win rate, 95% interval</text>",
    ]
    for tick in (0.0, 0.5, 1.0):
        x = axis_x + axis_span * tick
        parts.append(
            f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle" font-size="10">{tick:g}</text>'
        )
    half = axis_x + axis_span / 2
    parts.append(
        f'<line x1="{half:.1f}" y1="{top - 4}" x2="{half:.1f}" y2="{height - 40}" '
        'stroke="#757575" stroke-dasharray="3,3"/>'
    )
    for row, report in enumerate(reports):
        y = top + row * (bar_height + gap)
        label = html.escape(report.label())
        if several and report.judge_model:
            parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{label}</text>')
            judge = html.escape(f"judge {report.judge_model}")
            parts.append(
                f'<text x="{left - 8}" y="{y + 27}" text-anchor="end" font-size="10" '
                f'fill="#616161">{judge}</text>'
            )
        else:
            parts.append(f'<text x="{left - 8}" y="{y + 20}" text-anchor="end">{label}</text>')
        total = max(report.pairs, 1)
        x = float(left)
        for key, colour in _COLOURS.items():
            count = int(getattr(report, key))
            if not count:
                continue
            span = plot * count / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{span:.1f}" height="{bar_height}" '
                f'fill="{colour}"><title>{key}: {count}</title></rect>'
            )
            if span > 24:
                parts.append(
                    f'<text x="{x + span / 2:.1f}" y="{y + 20}" text-anchor="middle" '
                    f'fill="white">{count}</text>'
                )
            x += span
        if report.adjusted_win_rate_interval is not None:
            parts.append(
                _whisker(
                    report.adjusted_win_rate_interval,
                    axis_x,
                    axis_span,
                    y + 9,
                    _RAW_COLOUR,
                    "adjusted win rate",
                )
            )
        if report.length_controlled_interval is not None:
            parts.append(
                _whisker(
                    report.length_controlled_interval,
                    axis_x,
                    axis_span,
                    y + 21,
                    _LC_COLOUR,
                    "length-controlled win rate",
                )
            )
    legend_y = height - 26
    for i, (key, colour) in enumerate(_COLOURS.items()):
        x = left + i * 90
        parts.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{legend_y}">{key}</text>')
    for i, (name, colour) in enumerate(
        (("adjusted win rate", _RAW_COLOUR), ("length-controlled", _LC_COLOUR))
    ):
        x = left + i * 180
        y = legend_y + 18
        parts.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 14}" y2="{y - 4}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        parts.append(f'<text x="{x + 18}" y="{y}">{name} (95% interval)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


ACCURACY_TITLE = "Accuracy on the gold answers"


def accuracy_svg(report: AccuracyReport, width: int = 640) -> str:
    """A bar per strategy (overall accuracy) with its 95% interval as a whisker (SVG text)."""
    overall = [row for row in report.rows if row.category is None]
    bar_height, gap, left, top = 24, 14, 190, 50
    height = top + len(overall) * (bar_height + gap) + 30
    plot = width - left - 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="22" font-weight="bold">{ACCURACY_TITLE}, 95% intervals</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot * tick
        parts.append(
            f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle" font-size="10">{tick:g}</text>'
        )
    for i, row in enumerate(overall):
        y = top + i * (bar_height + gap)
        label = html.escape(row.strategy)
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{label}</text>')
        if row.accuracy is not None:
            title = html.escape(
                f"accuracy {row.accuracy:.2f}: {row.correct} right, {row.wrong} wrong, "
                f"{row.unreadable} unreadable"
            )
            parts.append(
                f'<rect x="{left}" y="{y}" width="{plot * row.accuracy:.1f}" '
                f'height="{bar_height}" fill="#2e7d32"><title>{title}</title></rect>'
            )
        if row.interval is not None:
            parts.append(
                _whisker(row.interval, left, plot, y + bar_height / 2, _RAW_COLOUR, "accuracy")
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(model: str) -> str:
    """A judge model's name as part of a file name: ``local:/m/x.gguf`` -> ``local_m_x.gguf``."""
    return _UNSAFE.sub("_", model).strip("._") or "judge"
