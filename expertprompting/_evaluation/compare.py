"""``compare``: does expert prompting help on *your* questions? One command answers it.

Generates every strategy's answers to a question file (resumably, with ``generate``), judges
each other strategy against the first (the baseline) with the position-fair
:class:`~expertprompting.Judge` (or several judges, each on its own), and writes a Markdown
report with a win/tie/loss chart (SVG) and the figures behind it, each with its 95% interval.

Layout of the output folder::

    answers-<strategy>.jsonl                  one per strategy (generate's layout)
    verdicts-<other>-vs-<first>.jsonl         the first judge's verdicts, both orders (resumable)
    verdicts-<other>-vs-<first>.<judge>.jsonl each further judge's verdicts
    report.md, report.json, wtl.svg
    compare.lock                              while a run writes the folder (one at a time)
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from .._datasets.generate import GenerateSummary, default_errors_path, generate
from .._datasets.items import FIRST_TURN_ONLY, InputProblem, read_rows
from .._datasets.outputs import (
    FileRole,
    OutputRefusedError,
    RunLock,
    check_clashes,
    os_error,
    write_text_atomic,
)
from .._method.errors import ConfigurationError
from .accuracy import AccuracyReport, accuracy_report, every_row_has_gold, score_answers
from .judge import Judge
from .report import (
    ACCURACY_TITLE,
    RESAMPLES,
    ComparisonReport,
    JudgeAgreement,
    LengthSummary,
    accuracy_svg,
    compare_judges,
    figures_html,
    require_pandas,
    safe_name,
    wtl_svg,
)

if TYPE_CHECKING:
    from .._prompter import ExpertPrompter

__all__ = [
    "CompareResult",
    "Metric",
    "compare",
    "render_markdown",
    "resolve_metric",
    "verdicts_name",
    "wtl_svg",
]

Metric = Literal["judge", "accuracy", "auto"]
METRICS = ("judge", "accuracy", "auto")


def resolve_metric(
    metric: str, questions: str | os.PathLike[str], *, judge_named: bool = False
) -> Literal["judge", "accuracy"]:
    """``judge`` or ``accuracy``; ``auto`` is accuracy when every question row has a gold
    answer (``choices`` and an ``answer``, or a short exact ``answer``) and no judge was named
    (``judge_named``: a judge asked for by name is used), else the judge."""
    if metric not in METRICS:
        raise ConfigurationError(f"metric={metric!r} is not one of judge, accuracy, auto.")
    if metric == "auto":
        if judge_named:
            return "judge"
        return "accuracy" if every_row_has_gold(questions) else "judge"
    return "accuracy" if metric == "accuracy" else "judge"


def verdicts_name(a: str, b: str, judge_index: int = 0, judge_model: str = "") -> str:
    """The verdicts file of ``a`` against ``b``: the first judge's keeps the name it always had,
    every further judge's carries its model's name (made safe for a file name)."""
    if judge_index == 0:
        return f"verdicts-{a}-vs-{b}.jsonl"
    return f"verdicts-{a}-vs-{b}.{safe_name(judge_model)}.jsonl"


class CompareResult(BaseModel):
    """Everything one ``compare`` run produced.

    ``reports`` holds the first judge's comparisons (one per strategy after the baseline);
    with several judges, ``other_reports`` holds the others' and ``agreement`` how often each
    further judge agrees with the first.
    """

    folder: str
    strategies: list[str]
    generation: dict[str, GenerateSummary]
    reports: list[ComparisonReport]
    judges: list[str] = Field(default_factory=list, description="Judge models, first first.")
    other_reports: list[ComparisonReport] = Field(
        default_factory=list, description="The further judges' reports, judge by judge."
    )
    agreement: list[JudgeAgreement] = Field(
        default_factory=list, description="Each further judge against the first, per comparison."
    )
    seed: int = Field(default=0, description="Seed of the bootstrap intervals.")
    metric: Literal["judge", "accuracy"] = Field(
        default="judge", description="How answers were compared: a judge, or gold answers."
    )
    accuracy: AccuracyReport | None = Field(
        default=None, description="Accuracy per strategy and category (metric accuracy)."
    )
    conversations: dict[str, int] = Field(
        default_factory=dict,
        description="Per strategy: questions of several turns (MT-Bench's) answered as a "
        "conversation, every turn.",
    )
    first_turn_only: dict[str, int] = Field(
        default_factory=dict,
        description="Per strategy: questions of several turns answered on their first turn only "
        "(their rows' note; multi-expert answers single messages).",
    )

    @property
    def all_reports(self) -> list[ComparisonReport]:
        """Every judge's reports: the first judge's, then the others'."""
        return [*self.reports, *self.other_reports]

    @property
    def failed(self) -> int:
        """Answers and judgements that failed this run; rerunning ``compare`` retries them."""
        return sum(g.failed for g in self.generation.values()) + sum(
            r.failed for r in self.all_reports
        )

    def lengths(self) -> dict[str, LengthSummary]:
        """Each strategy's answer lengths in tokens, over the questions its comparison judged."""
        found: dict[str, LengthSummary] = {}
        for r in self.reports:
            if r.length_b is not None:
                found.setdefault(r.b, r.length_b)
            if r.length_a is not None:
                found.setdefault(r.a, r.length_a)
        return {name: found[name] for name in self.strategies if name in found}

    def gaps(self) -> list[str]:
        """One line per thing missing from the comparison, and where to see why."""
        lines = []
        for name, g in self.generation.items():
            if g.failed:
                lines.append(f"{name}: {g.failed} answers failed (see {g.errors_file})")
            if g.input_problems:
                lines.append(
                    f"{name}: {g.input_problems} input rows unusable (see {g.errors_file})"
                )
        several = len(self.judges) > 1
        for r in self.all_reports:
            if r.failed:
                verdicts = r.verdicts_file or str(Path(self.folder) / verdicts_name(r.a, r.b))
                errors = default_errors_path(Path(verdicts))
                lines.append(
                    f"{r.label(judge=several)}: {r.failed} pairs not judged (see {errors})"
                )
        return lines

    def _repr_html_(self) -> str:
        """The figures of every comparison with their intervals, then the chart (Jupyter)."""
        if self.accuracy is not None:
            return _accuracy_html(self.accuracy) + accuracy_svg(self.accuracy)
        return figures_html(self.all_reports, self.agreement) + wtl_svg(self.all_reports)

    def to_pandas(self) -> Any:
        """One row per comparison and judge: counts, figures and interval ends; with the
        accuracy metric, one row per strategy and category (needs pandas)."""
        pd = require_pandas()
        if self.accuracy is not None:
            return pd.DataFrame(
                [
                    {
                        **row.model_dump(exclude={"interval"}),
                        "accuracy_low": row.interval.low if row.interval else None,
                        "accuracy_high": row.interval.high if row.interval else None,
                    }
                    for row in self.accuracy.rows
                ]
            )
        rows = []
        for r in self.all_reports:
            row: dict[str, Any] = {
                "a": r.a,
                "b": r.b,
                "judge_model": r.judge_model,
                "pairs": r.pairs,
                "wins": r.wins,
                "ties": r.ties,
                "losses": r.losses,
                "unparsed": r.unparsed,
                "sign_test_p": r.sign_test_p,
                "position_consistency": r.position_consistency,
                "mean_length_a": r.length_a.mean if r.length_a else None,
                "mean_length_b": r.length_b.mean if r.length_b else None,
            }
            for name, estimate, interval in (
                ("adjusted_win_rate", r.adjusted_win_rate, r.adjusted_win_rate_interval),
                ("score_ratio", r.score_ratio, r.score_ratio_interval),
                (
                    "length_controlled_win_rate",
                    r.length_controlled_win_rate,
                    r.length_controlled_interval,
                ),
            ):
                row[name] = estimate
                row[f"{name}_low"] = interval.low if interval else None
                row[f"{name}_high"] = interval.high if interval else None
            rows.append(row)
        return pd.DataFrame(rows)


def _accuracy_html(report: AccuracyReport) -> str:
    """The accuracy table in HTML (every text escaped)."""
    head = ("strategy", "category", "correct", "wrong", "unreadable", "accuracy [95%]")
    rows = []
    for row in report.rows:
        figure = "n/a" if row.accuracy is None else f"{row.accuracy:.2f}"
        if row.interval is not None:
            figure = str(row.interval)
        cells = (
            row.strategy,
            row.category or "all",
            str(row.correct),
            str(row.wrong),
            str(row.unreadable),
            figure,
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    words = "<br>".join(
        html.escape(f"{d.strategy} vs {d.baseline}: {d.verdict()}") for d in report.differences
    )
    return (
        "<table>\n<thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n"
        + (f"<p>{words}</p>\n" if words else "")
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _md_cell(text: str) -> str:
    """Text for a Markdown table cell: a `|` would split the cell."""
    return text.replace("|", "\\|")


def render_markdown(result: CompareResult, judge_model: str, answer_model: str) -> str:
    """The report: setup, the chart, the figures with their intervals in plain words, length,
    the judges' agreement, categories, generation, gaps and caveats."""
    if result.accuracy is not None:
        return _render_accuracy(result, result.accuracy, answer_model)
    judges = result.judges or [judge_model]
    several = len(judges) > 1
    reports = result.all_reports
    who = (
        f"judged pairwise by `{judges[0]}` in both orders"
        if not several
        else "judged pairwise by "
        + ", ".join(f"`{j}`" for j in judges[:-1])
        + f" and `{judges[-1]}`, each on its own and in both orders"
    )
    lines = [
        "# Strategy comparison",
        "",
        f"Answers by `{answer_model}`, {who} (each answer's score is the mean of its two "
        "scores; equal means are a tie).",
        "",
        "![Wins, ties and losses](wtl.svg)",
        "",
        "| comparison | wins | ties | losses | unparsed | adjusted win rate | score ratio "
        "| position consistency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {_md_cell(r.label(judge=several))} | {r.wins} | {r.ties} | {r.losses} "
            f"| {r.unparsed} | {_pct(r.adjusted_win_rate)} | {_pct(r.score_ratio)} | "
            f"{_pct(r.position_consistency)} |"
        )
    lines += [
        "",
        "- **adjusted win rate**: (wins + ties/2) / scored pairs, from the side of the strategy "
        "compared with the baseline (the first one listed).",
        "- **score ratio**: that strategy's score sum as a share of the baseline's (the paper "
        "reports ExpertLLaMA at 96% of ChatGPT this way).",
        "- **position consistency**: how often the judge preferred the same answer in both "
        "orders; low values mean the verdicts are mostly position bias.",
        "- **unparsed**: questions where no verdict could be read in either order (never "
        "counted as a win).",
    ]
    for r in reports:
        if r.nothing_read:
            lines += [
                "",
                f"**No verdict could be read for {r.a} vs {r.b}**: the judge "
                f"`{r.judge_model or judge_model}` did not write its scores in the asked format, "
                "so this comparison measures nothing. Remove its verdicts file and judge again "
                "with a more capable judge model (`--judge-model`).",
            ]
    lines += _how_sure(result, several)
    lines += _length_section(result, several)
    if result.agreement:
        lines += ["", "## Do the judges agree?", ""]
        lines.append("| comparison | judges | questions both read | same outcome | Cohen's kappa |")
        lines.append("|---|---|---|---|---|")
        for pair in result.agreement:
            kappa = "n/a" if pair.kappa is None else f"{pair.kappa:.2f}"
            lines.append(
                f"| {_md_cell(pair.a)} vs {_md_cell(pair.b)} | {_md_cell(pair.judge_1)}, "
                f"{_md_cell(pair.judge_2)} | {pair.questions} | {_pct(pair.agreement)} "
                f"| {kappa} |"
            )
        lines += [""] + [f"- {pair.sentence()}." for pair in result.agreement]
        lines += [
            "",
            "Kappa is the agreement beyond what two judges with these outcome shares would "
            "reach by chance: 1 is full agreement, 0 no better than chance. Where judges "
            "disagree, a difference rests on one judge's taste.",
        ]
    for r in reports:
        if r.categories:
            lines += [
                "",
                f"## {r.label(judge=several)} by category",
                "",
                "| category | wins | ties | losses | unparsed |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {_md_cell(c.category)} | {c.wins} | {c.ties} | {c.losses} | {c.unparsed} |"
                for c in r.categories
            ]
    lines += _generation(result)
    lines += [
        "",
        "## Caveats",
        "",
        "- LLM judges prefer longer answers and expert personas make answers longer: read the "
        "length-controlled win rate next to the raw one (the length check above).",
        "- Personas rarely help multiple-choice or short factual reasoning; expect gains, if "
        "any, on open-ended questions.",
        "- A small judge model gives noisy verdicts: check the unparsed count and the position "
        "consistency before trusting a difference.",
        "",
    ]
    return "\n".join(lines)


def _render_accuracy(result: CompareResult, accuracy: AccuracyReport, answer_model: str) -> str:
    """The report of a comparison on gold answers: accuracy tables, no judge."""
    lines = [
        "# Strategy comparison",
        "",
        f"Answers by `{answer_model}`, scored against the questions' gold answers (no judge): "
        "each reply is read for its answer (a letter, the option's text, or \"The answer is "
        '...") and is right, wrong, or unreadable.',
        "",
        "![Accuracy](wtl.svg)",
        "",
        "## Accuracy",
        "",
        accuracy.markdown().rstrip("\n"),
    ]
    lines += _generation(result)
    lines += [
        "",
        "## Caveats",
        "",
        "- Unreadable replies count as not right: check the unreadable column before reading "
        "a difference as knowledge rather than format.",
        "- Personas rarely help multiple-choice or short factual reasoning; a difference here "
        "says little about open-ended questions (judge those with `--metric judge`).",
        "",
    ]
    return "\n".join(lines)


def _generation(result: CompareResult) -> list[str]:
    """The generation table and the gaps of a run."""
    lines = ["", "## Generation", ""]
    lines.append("| strategy | answered | failed | unusable input rows | requests | tokens |")
    lines.append("|---|---|---|---|---|---|")
    for name, g in result.generation.items():
        done = g.done + g.already_done
        lines.append(
            f"| {name} | {done} | {g.failed} | {g.input_problems} | {g.usage.requests} "
            f"| {g.usage.total_tokens} |"
        )
    lines += _turns(result)
    gaps = result.gaps()
    if gaps:
        lines += ["", "## Gaps", ""]
        lines += [f"- {gap}" for gap in gaps]
        if result.failed:
            lines += ["", "Failed answers and judgements are retried by running `compare` again."]
    return lines


def _turns(result: CompareResult) -> list[str]:
    """What became of the questions of several turns, when there were any."""
    lines: list[str] = []
    answered = {name: n for name, n in result.conversations.items() if n}
    if answered:
        counts = ", ".join(f"{_md_cell(name)} {n}" for name, n in answered.items())
        lines += [
            "",
            f"Questions of several turns answered as conversations ({counts}): the first turn "
            "as any question, each later turn with the conversation so far (the earlier "
            "answers included). Where both sides of a comparison did so, the judge saw the whole "
            "conversation and scored the answers to the last turn.",
        ]
    first_only = {name: n for name, n in result.first_turn_only.items() if n}
    if first_only:
        counts = ", ".join(f"{_md_cell(name)} {n}" for name, n in first_only.items())
        lines += [
            "",
            f"Questions of several turns answered on their first turn only ({counts}; their "
            "rows carry a note): multi-expert answers single messages, and rows of older runs "
            "or of Batch API files have the first turn's answer alone. Their pairs are judged "
            "on the first turn.",
        ]
    return lines


def _turn_counts(path: Path) -> tuple[int, int]:
    """Rows of an answers file answered as conversations, and rows with the first-turn note."""
    whole = first = 0
    if not path.is_file():
        return whole, first
    for row in read_rows(path, what="answers file"):
        value = None if isinstance(row, InputProblem) else row.value
        if not isinstance(value, dict):
            continue
        extra = value.get("extra")
        if isinstance(value.get("turns_answers"), list):
            whole += 1
        elif isinstance(extra, dict) and extra.get("note") == FIRST_TURN_ONLY:
            first += 1
    return whole, first


def _how_sure(result: CompareResult, several: bool) -> list[str]:
    """The intervals table and, per comparison, whether each figure tells the two apart."""
    reports = result.all_reports
    lines = [
        "",
        "## How sure is each difference?",
        "",
        "| comparison | adjusted win rate [95%] | score ratio [95%] "
        "| length-controlled win rate [95%] | sign test p |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        p = "n/a" if r.sign_test_p is None else f"{r.sign_test_p:.3g}"
        cells = [
            _interval_cell(r.adjusted_win_rate_interval),
            _interval_cell(r.score_ratio_interval),
            _interval_cell(r.length_controlled_interval),
        ]
        lines.append(f"| {_md_cell(r.label(judge=several))} | " + " | ".join(cells) + f" | {p} |")
    lines.append("")
    for r in reports:
        if several:
            lines.append(f"Judged by `{r.judge_model}`:")
            lines.append("")
        lines += [f"- {finding}." for finding in r.findings()]
        lines.append("")
    resamples = next(
        (r.adjusted_win_rate_interval.resamples for r in reports if r.adjusted_win_rate_interval),
        RESAMPLES,
    )
    lines += [
        f"Intervals: 95% paired bootstrap over the questions ({resamples} resamples, seed "
        f"{result.seed}). A difference is *distinguishable* when its interval leaves out no "
        "difference at all (0.5 for a win rate, 1 for a score ratio); *not distinguishable* "
        "means these questions cannot tell the two apart, not that they are equal. The sign "
        "test asks how often a split of wins and losses this uneven happens when neither side "
        "is better (ties left out).",
    ]
    return lines


def _interval_cell(interval: Any) -> str:
    return "n/a" if interval is None else str(interval)


def _length_section(result: CompareResult, several: bool) -> list[str]:
    """Answer lengths per strategy and the comparisons whose raw and LC win rates disagree."""
    lengths = result.lengths()
    lines = ["", "## Length", ""]
    if lengths:
        lines += ["| strategy | answers | mean tokens | median tokens |", "|---|---|---|---|"]
        lines += [
            f"| {_md_cell(name)} | {s.answers} | {s.mean:.0f} | {s.median:.0f} |"
            for name, s in lengths.items()
        ]
        lines.append("")
    flags = [check for r in result.all_reports if (check := r.length_check(judge=several))]
    if flags:
        lines += [f"- **Length check**: {flag}" for flag in flags]
    elif any(r.length_controlled_interval for r in result.all_reports):
        lines.append(
            "The raw and length-controlled win rates agree for every comparison: the "
            "differences above are not the judge's taste for length."
        )
    lines += [
        "",
        "The length-controlled win rate (as AlpacaEval 2 computes it) fits the judge's "
        "preference to the difference in answer length and reads it at equal length: the win "
        "rate the strategy would get if its answers were as long as the baseline's. A "
        "comparison is flagged when it and the raw rate disagree at the 95% level or differ "
        "by more than 0.1.",
    ]
    return lines


def compare(
    prompter: ExpertPrompter,
    questions: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    strategies: Sequence[str],
    judge: Judge | Sequence[Judge] | None = None,
    concurrency: int = 8,
    rpm: float | None = None,
    tpm: float | None = None,
    progress: bool = True,
    seed: int = 0,
    metric: Metric = "auto",
) -> CompareResult:
    """Answer ``questions`` with every strategy, judge each against the first, write the report.

    ``judge`` may be several judges: each judges every comparison on its own (its own
    verdicts file), the report shows each judge's figures and how often they agree with the
    first. ``seed`` seeds the bootstrap intervals.

    ``metric="accuracy"`` scores every answer against its question's gold answer instead (no
    judge is called, and none is needed); ``"auto"`` does so when every question row has one
    and ``judge`` is None (a judge passed is used).
    Everything is resumable: rerunning with the same folder reuses finished answers and
    verdicts.
    """
    if len(strategies) < 2:
        raise ConfigurationError("compare needs at least two strategies, e.g. vanilla,expert.")
    if len(set(strategies)) != len(strategies):
        raise ConfigurationError(f"Strategies repeat: {', '.join(strategies)}.")
    chosen = resolve_metric(metric, questions, judge_named=judge is not None)
    if chosen == "accuracy":
        judges: list[Judge] = []
    else:
        judges = [] if judge is None else [judge] if isinstance(judge, Judge) else list(judge)
        if not judges:
            raise ConfigurationError(
                "compare needs a judge: pass judge=Judge(...) (or several), or "
                'metric="accuracy" for questions with gold answers.'
            )
    names = [j.model for j in judges]
    files = [safe_name(m) for m in names]
    if len(set(names)) != len(names) or len(set(files)) != len(files):
        raise ConfigurationError(
            f"Judge models repeat (or share a file name): {', '.join(names)}; name each once."
        )
    for name in strategies:
        prompter.resolve_strategy(name)  # validates, with a clear error
    out = Path(folder)
    baseline = strategies[0]
    verdict_files = {
        (other, i): out / verdicts_name(other, baseline, i, j.model)
        for other in strategies[1:]
        for i, j in enumerate(judges)
    }
    _prepare_folder(out, Path(questions), strategies, list(verdict_files.values()))
    with RunLock(out, "-o", lock_path=out / "compare.lock"):
        generation: dict[str, GenerateSummary] = {}
        options: dict[str, Any] = {"concurrency": concurrency, "rpm": rpm, "tpm": tpm}
        for name in strategies:
            generation[name] = generate(
                prompter,
                questions,
                out / f"answers-{name}.jsonl",
                strategy=name,
                progress=progress,
                **options,
            )
        counted = {name: _turn_counts(out / f"answers-{name}.jsonl") for name in strategies}
        turns: dict[str, Any] = {
            "conversations": {name: whole for name, (whole, _) in counted.items()},
            "first_turn_only": {name: first for name, (_, first) in counted.items()},
        }
        if chosen == "accuracy":
            scores = {
                name: score_answers(out / f"answers-{name}.jsonl", questions) for name in strategies
            }
            accuracy = accuracy_report(scores, seed=seed)
            result = CompareResult(
                folder=str(out),
                strategies=list(strategies),
                generation=generation,
                reports=[],
                seed=seed,
                metric="accuracy",
                accuracy=accuracy,
                **turns,
            )
            write_text_atomic(out / "wtl.svg", accuracy_svg(accuracy))
            write_text_atomic(out / "report.json", result.model_dump_json(indent=2))
            write_text_atomic(out / "report.md", render_markdown(result, "", prompter.config.model))
            return result
        by_judge: list[list[ComparisonReport]] = []
        for i, j in enumerate(judges):
            reports = []
            for other in strategies[1:]:
                path = verdict_files[(other, i)]
                report = j.judge_files(
                    out / f"answers-{other}.jsonl",
                    out / f"answers-{baseline}.jsonl",
                    path,
                    a_name=other,
                    b_name=baseline,
                    progress=progress,
                    # lengths in the answering model's tokens, whoever judges
                    counter=prompter.counter,
                    seed=seed,
                    **options,
                )
                report.judge_model = j.model
                report.verdicts_file = str(path)
                reports.append(report)
            by_judge.append(reports)
        agreement = [
            compare_judges(first, later)
            for others in by_judge[1:]
            for first, later in zip(by_judge[0], others, strict=True)
        ]
        result = CompareResult(
            folder=str(out),
            strategies=list(strategies),
            generation=generation,
            reports=by_judge[0],
            judges=names,
            other_reports=[r for reports in by_judge[1:] for r in reports],
            agreement=agreement,
            seed=seed,
            **turns,
        )
        # each replaced whole, so a full disk leaves the previous report rather than half of one
        write_text_atomic(out / "wtl.svg", wtl_svg(result.all_reports))
        write_text_atomic(out / "report.json", result.model_dump_json(indent=2))
        write_text_atomic(
            out / "report.md", render_markdown(result, names[0], prompter.config.model)
        )
    return result


def _is_report_md(text: str) -> bool:
    return text.startswith("# Strategy comparison\n")


def _is_report_json(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and {"folder", "strategies", "generation", "reports"} <= set(data)


def _is_chart(text: str) -> bool:
    return text.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and (
        "Wins, ties and losses against the baseline" in text or ACCURACY_TITLE in text
    )


_REPORT_FILES = {"report.md": _is_report_md, "report.json": _is_report_json, "wtl.svg": _is_chart}


def _prepare_folder(
    out: Path, questions: Path, strategies: Sequence[str], verdict_files: Sequence[Path]
) -> None:
    """Refuse a folder compare cannot safely write; create it.

    Refused: ``-o`` naming a file, the questions file being one of the files compare writes,
    and a report file there that compare did not write (answers and verdicts files are checked
    by ``generate`` and the judge).
    """
    if out.exists() and not out.is_dir():
        raise OutputRefusedError(
            f"{out} is a file, but compare writes a folder of results there; pass -o a folder "
            "(a new one, or one compare wrote before)."
        )
    written = [out / name for name in _REPORT_FILES]
    for name in strategies:
        written.append(out / f"answers-{name}.jsonl")
        written.append(default_errors_path(out / f"answers-{name}.jsonl"))
    for path in verdict_files:
        written.append(path)
        written.append(default_errors_path(path))
    check_clashes(
        [FileRole(path, "file compare writes", "-o") for path in written],
        [FileRole(questions, "questions file")],
    )
    for name, looks_ours in _REPORT_FILES.items():
        path = out / name
        if path.is_dir() or (path.exists() and not looks_ours(_read_text(path))):
            raise OutputRefusedError(
                f"{path} was not written by expertprompting compare, so it is left as it is. "
                "Choose another -o, or move the file away."
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(out, exc, "create the folder") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return ""
