"""``compare``: does expert prompting help on *your* questions? One command answers it.

Generates every strategy's answers to a question file (resumably, with ``generate``), judges
each other strategy against the first (the baseline) with the position-fair
:class:`~expertprompting.judge.Judge`, and writes a Markdown report with a win/tie/loss chart
(SVG) and the figures behind it.

Layout of the output folder::

    answers-<strategy>.jsonl          one per strategy (generate's layout)
    verdicts-<other>-vs-<first>.jsonl every verdict, both orders (resumable)
    report.md, report.json, wtl.svg
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .errors import ConfigurationError
from .generate import GenerateSummary, default_errors_path, generate
from .judge import ComparisonReport, Judge

if TYPE_CHECKING:
    from .prompter import ExpertPrompter

__all__ = ["CompareResult", "compare", "render_markdown", "wtl_svg"]


class CompareResult(BaseModel):
    """Everything one ``compare`` run produced."""

    folder: str
    strategies: list[str]
    generation: dict[str, GenerateSummary]
    reports: list[ComparisonReport]

    @property
    def failed(self) -> int:
        """Answers and judgements that failed this run; rerunning ``compare`` retries them."""
        return sum(g.failed for g in self.generation.values()) + sum(r.failed for r in self.reports)

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
        for r in self.reports:
            if r.failed:
                errors = default_errors_path(Path(self.folder) / f"verdicts-{r.a}-vs-{r.b}.jsonl")
                lines.append(f"{r.a} vs {r.b}: {r.failed} pairs not judged (see {errors})")
        return lines


def wtl_svg(reports: Sequence[ComparisonReport], width: int = 640) -> str:
    """A horizontal stacked bar per comparison: wins, ties, losses, unparsed (SVG text)."""
    colours = {"wins": "#2e7d32", "ties": "#9e9e9e", "losses": "#c62828", "unparsed": "#ffb300"}
    bar_height, gap, left, top = 28, 14, 190, 40
    height = top + len(reports) * (bar_height + gap) + 30
    plot = width - left - 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="22" font-weight="bold">Wins, ties and losses against the '
        "baseline</text>",
    ]
    for row, report in enumerate(reports):
        y = top + row * (bar_height + gap)
        label = html.escape(f"{report.a} vs {report.b}")
        parts.append(f'<text x="{left - 8}" y="{y + 19}" text-anchor="end">{label}</text>')
        total = max(report.pairs, 1)
        x = float(left)
        for key, colour in colours.items():
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
                    f'<text x="{x + span / 2:.1f}" y="{y + 19}" text-anchor="middle" '
                    f'fill="white">{count}</text>'
                )
            x += span
    legend_y = height - 12
    for i, (key, colour) in enumerate(colours.items()):
        x = left + i * 110
        parts.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{legend_y}">{key}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def render_markdown(result: CompareResult, judge_model: str, answer_model: str) -> str:
    """The report: setup, the chart, a table per comparison, categories, caveats."""
    lines = [
        "# Strategy comparison",
        "",
        f"Answers by `{answer_model}`, judged pairwise by `{judge_model}` in both orders "
        "(each answer's score is the mean of its two scores; equal means are a tie).",
        "",
        "![Wins, ties and losses](wtl.svg)",
        "",
        "| comparison | wins | ties | losses | unparsed | adjusted win rate | score ratio "
        "| position consistency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.reports:
        lines.append(
            f"| {r.a} vs {r.b} | {r.wins} | {r.ties} | {r.losses} | {r.unparsed} | "
            f"{_pct(r.adjusted_win_rate)} | {_pct(r.score_ratio)} | "
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
    for r in result.reports:
        if r.categories:
            lines += [
                "",
                f"## {r.a} vs {r.b} by category",
                "",
                "| category | wins | ties | losses | unparsed |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {c.category} | {c.wins} | {c.ties} | {c.losses} | {c.unparsed} |"
                for c in r.categories
            ]
    lines += ["", "## Generation", ""]
    lines.append("| strategy | answered | failed | unusable input rows | requests | tokens |")
    lines.append("|---|---|---|---|---|---|")
    for name, g in result.generation.items():
        done = g.done + g.already_done
        lines.append(
            f"| {name} | {done} | {g.failed} | {g.input_problems} | {g.usage.requests} "
            f"| {g.usage.total_tokens} |"
        )
    gaps = result.gaps()
    if gaps:
        lines += ["", "## Gaps", ""]
        lines += [f"- {gap}" for gap in gaps]
        if result.failed:
            lines += ["", "Failed answers and judgements are retried by running `compare` again."]
    lines += [
        "",
        "## Caveats",
        "",
        "- LLM judges prefer longer, more elaborate answers; expert personas make answers longer.",
        "- Personas rarely help multiple-choice or short factual reasoning; expect gains, if "
        "any, on open-ended questions.",
        "- A small judge model gives noisy verdicts: check the unparsed count and the position "
        "consistency before trusting a difference.",
        "",
    ]
    return "\n".join(lines)


def compare(
    prompter: ExpertPrompter,
    questions: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    strategies: Sequence[str],
    judge: Judge,
    concurrency: int = 8,
    rpm: float | None = None,
    tpm: float | None = None,
    progress: bool = True,
) -> CompareResult:
    """Answer ``questions`` with every strategy, judge each against the first, write the report.

    Everything is resumable: rerunning with the same folder reuses finished answers and
    verdicts.
    """
    if len(strategies) < 2:
        raise ConfigurationError("compare needs at least two strategies, e.g. vanilla,expert.")
    if len(set(strategies)) != len(strategies):
        raise ConfigurationError(f"Strategies repeat: {', '.join(strategies)}.")
    for name in strategies:
        prompter._strategy(name)  # validates, with a clear error
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
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
    baseline = strategies[0]
    reports = [
        judge.judge_files(
            out / f"answers-{other}.jsonl",
            out / f"answers-{baseline}.jsonl",
            out / f"verdicts-{other}-vs-{baseline}.jsonl",
            a_name=other,
            b_name=baseline,
            progress=progress,
            **options,
        )
        for other in strategies[1:]
    ]
    result = CompareResult(
        folder=str(out), strategies=list(strategies), generation=generation, reports=reports
    )
    (out / "wtl.svg").write_text(wtl_svg(reports), encoding="utf-8")
    (out / "report.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
    (out / "report.md").write_text(
        render_markdown(result, judge.model, prompter.config.model), encoding="utf-8"
    )
    return result
