"""``compare``: does expert prompting help on *your* questions? One command answers it.

Generates every strategy's answers to a question file (resumably, with ``generate``), judges
each other strategy against the first (the baseline) with the position-fair
:class:`~expertprompting.Judge`, and writes a Markdown report with a win/tie/loss chart
(SVG) and the figures behind it.

Layout of the output folder::

    answers-<strategy>.jsonl          one per strategy (generate's layout)
    verdicts-<other>-vs-<first>.jsonl every verdict, both orders (resumable)
    report.md, report.json, wtl.svg
    compare.lock                      while a run writes the folder (one run at a time)
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .._datasets.generate import GenerateSummary, default_errors_path, generate
from .._datasets.outputs import (
    FileRole,
    OutputRefusedError,
    RunLock,
    check_clashes,
    os_error,
    write_text_atomic,
)
from .._method.errors import ConfigurationError
from .judge import Judge
from .report import ComparisonReport

if TYPE_CHECKING:
    from .._prompter import ExpertPrompter

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
        if r.nothing_read:
            lines += [
                "",
                f"**No verdict could be read for {r.a} vs {r.b}**: the judge `{judge_model}` "
                "did not write its scores in the asked format, so this comparison measures "
                "nothing. Remove its verdicts file and judge again with a more capable judge "
                "model (`--judge-model`).",
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
        prompter.resolve_strategy(name)  # validates, with a clear error
    out = Path(folder)
    _prepare_folder(out, Path(questions), strategies)
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
        # each replaced whole, so a full disk leaves the previous report rather than half of one
        write_text_atomic(out / "wtl.svg", wtl_svg(reports))
        write_text_atomic(out / "report.json", result.model_dump_json(indent=2))
        write_text_atomic(
            out / "report.md", render_markdown(result, judge.model, prompter.config.model)
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
        "Wins, ties and losses against the baseline" in text
    )


_REPORT_FILES = {"report.md": _is_report_md, "report.json": _is_report_json, "wtl.svg": _is_chart}


def _prepare_folder(out: Path, questions: Path, strategies: Sequence[str]) -> None:
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
    baseline = strategies[0]
    written = [out / name for name in _REPORT_FILES]
    for name in strategies:
        written.append(out / f"answers-{name}.jsonl")
        written.append(default_errors_path(out / f"answers-{name}.jsonl"))
    for other in strategies[1:]:
        written.append(out / f"verdicts-{other}-vs-{baseline}.jsonl")
        written.append(default_errors_path(out / f"verdicts-{other}-vs-{baseline}.jsonl"))
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
