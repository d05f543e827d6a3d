"""The evaluation commands: ``judge`` and ``compare``, and the judge both build from the options.

Each takes the parsed arguments and returns an exit code; the library is imported inside them,
so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

# the module itself for local_available: looked up when called, so a test can replace it
from . import _common
from ._common import (
    NOTES,
    UsageError,
    prompter_from_args,
    resolve_model,
    retry_setting,
    timeout_settings,
)


def add_judge_model_option(parser: argparse.ArgumentParser, default: str) -> None:
    """``--judge-model``, repeatable: each judge judges on its own, the report compares them."""
    parser.add_argument(
        "--judge-model",
        action="append",
        metavar="MODEL",
        help=f"the judge (default: {default}); repeat it for several judges, each with its own "
        "verdicts file, and the report says how often they agree",
    )


def add_metric_option(parser: argparse.ArgumentParser) -> None:
    """``compare --metric``: a judge, or exact scoring against gold answers."""
    parser.add_argument(
        "--metric",
        choices=("judge", "accuracy", "auto"),
        default="auto",
        help="judge: a judge model compares answers pairwise; accuracy: answers are scored "
        "against the questions' gold answers, no judge; auto (default): accuracy when every "
        "question has a gold answer and no --judge-model is named, else judge",
    )


def judge_from_args(args: argparse.Namespace, model: str | None = None) -> Any:
    """A judge that ``judge`` and ``compare`` run: ``model``, else the first ``--judge-model``,
    else as --model resolves."""
    from .._evaluation.judge import Judge
    from .._io.local import is_local_model

    named = model if model is not None else (args.judge_model or [None])[0]
    if named is None:
        named, note = resolve_model(args.model, args.base_url, os.environ, _common.local_available)
        if note:  # compare has shown it already for its answers: notes show once
            NOTES.add(note)
    if not is_local_model(named) and not (
        args.base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
    ):
        raise UsageError(
            f"the judge model {named!r} needs an API key: set OPENAI_API_KEY, or pass "
            "--base-url of an OpenAI-compatible server, or use --judge-model local"
        )
    settings: dict[str, Any] = {}
    if args.base_url and not is_local_model(named):
        settings["base_url"] = args.base_url
    if args.seed is not None:
        settings["seed"] = args.seed
    # --context-window is the judge's in `judge`; in `compare`, only when it judges with the
    # answering model (another --judge-model has a window of its own)
    if args.context_window is not None and (args.subcommand == "judge" or not args.judge_model):
        settings["context_window"] = args.context_window
    settings.update(retry_setting(args))
    settings.update(timeout_settings(args))
    cache = getattr(args, "judge_cache", None)
    if cache:
        settings["cache"] = cache
    judge = Judge(model=named, **settings)
    NOTES.flush()
    return judge


def judges_from_args(args: argparse.Namespace) -> list[Any]:
    """Every judge ``--judge-model`` names (one as --model resolves when none is named)."""
    names: list[str] = args.judge_model or []
    if len(set(names)) != len(names):
        raise UsageError("a --judge-model is given twice: name each judge once")
    if not names:
        return [judge_from_args(args)]
    return [judge_from_args(args, name) for name in names]


def _print_report(report: Any, stream: TextIO, *, with_judge: bool = False) -> None:
    print(
        f"{report.label(judge=with_judge)}: {report.wins} wins, {report.ties} ties, "
        f"{report.losses} losses, {report.unparsed} unparsed of {report.pairs}; adjusted win rate "
        + ("n/a" if report.adjusted_win_rate is None else f"{report.adjusted_win_rate:.1%}")
        + "; score ratio "
        + ("n/a" if report.score_ratio is None else f"{report.score_ratio:.1%}")
        + "; position consistency "
        + ("n/a" if report.position_consistency is None else f"{report.position_consistency:.1%}"),
        file=stream,
    )
    if report.pairs:
        for finding in report.findings():
            print(f"  {finding}", file=stream)
        check = report.length_check(judge=with_judge)
        if check:
            print(f"  length check: {check}", file=stream)


def _no_verdict_read(model: str, verdicts: str) -> str:
    """The error when no verdict could be read: the judge does not write the scores as asked."""
    from .._io.local import BUNDLED_MODEL_FILE, is_local_model

    local_file = Path(model.removeprefix("local:")).name
    if model == "local" or (is_local_model(model) and local_file == BUNDLED_MODEL_FILE):
        why = (
            "the bundled SmolLM2-135M model is too small to judge (it does not write the two "
            "scores it is asked for)"
        )
        fix = "a capable model (e.g. --judge-model gpt-4o with OPENAI_API_KEY set)"
    else:
        why = (
            f"the judge model {model} is not following the score format (two scores from 1 to "
            f"10 on the first line; its replies are in {verdicts})"
        )
        fix = "a more capable model"
    # a rerun resumes from the verdicts file, so the unreadable verdicts must go first
    return (
        f"no verdict could be read: {why}; remove {verdicts} and rerun with --judge-model "
        f"naming {fix}"
    )


def _more_verdicts(first: str, model: str) -> str:
    """A further judge's verdicts file beside the first's: ``v.jsonl`` -> ``v.<model>.jsonl``."""
    from .._evaluation.report import safe_name

    path = Path(first)
    return str(path.with_name(f"{path.stem}.{safe_name(model)}{path.suffix or '.jsonl'}"))


def cmd_judge(args: argparse.Namespace) -> int:
    from .._evaluation.report import compare_judges

    judges = judges_from_args(args)
    first = args.output or str(Path(args.a).with_suffix("")) + ".verdicts.jsonl"
    files = [first] + [_more_verdicts(first, j.model) for j in judges[1:]]
    if len(set(files)) != len(files):
        raise UsageError("two --judge-model names give the same verdicts file: rename one")

    def problem(text: str) -> None:  # as generate reports its unusable input rows
        print(f"expertprompting: skipped input row: {text}", file=sys.stderr)

    reports = []
    for i, (judge, verdicts) in enumerate(zip(judges, files, strict=True)):
        report = judge.judge_files(
            args.a,
            args.b,
            verdicts,
            a_name=Path(args.a).stem,
            b_name=Path(args.b).stem,
            concurrency=args.concurrency,
            progress=not args.no_progress,
            # the answer rows' problems are the same for every judge: said once
            on_problem=problem if i == 0 else None,
        )
        report.judge_model = judge.model
        report.verdicts_file = verdicts
        reports.append(report)
    agreement = [compare_judges(reports[0], later) for later in reports[1:]]
    several = len(reports) > 1
    if args.json:
        data: Any = [r.model_dump(exclude={"verdicts"}) for r in reports]
        if several:
            data = {"reports": data, "agreement": [g.model_dump() for g in agreement]}
        else:
            data = data[0]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        for report in reports:
            _print_report(report, sys.stdout, with_judge=several)
        for pair in agreement:
            print(pair.sentence(), file=sys.stdout)
    status = 0
    for report, judge, verdicts in zip(reports, judges, files, strict=True):
        print(f"verdicts: {verdicts}", file=sys.stderr)
        if report.nothing_read:
            message = _no_verdict_read(judge.model, verdicts)
            print(f"expertprompting: error: {message}", file=sys.stderr)
            status = 1
        if report.failed:
            from .._datasets.generate import default_errors_path

            errors = default_errors_path(verdicts)
            print(
                f"{report.failed} pairs could not be judged (see {errors}); rerun to judge them",
                file=sys.stderr,
            )
            status = 1
    return status


def cmd_compare(args: argparse.Namespace) -> int:
    from .._evaluation.compare import compare, resolve_metric

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    ep = prompter_from_args(args)
    metric = resolve_metric(args.metric, args.questions, judge_named=bool(args.judge_model))
    if metric == "accuracy" and args.judge_model:
        raise UsageError(
            "--judge-model has nothing to judge with --metric accuracy (answers are scored "
            "against the gold answers): drop it, or pass --metric judge"
        )
    # with gold answers no judge is built: none is needed, nor its key
    judges = judges_from_args(args) if metric == "judge" else []
    result = compare(
        ep,
        args.questions,
        args.output,
        strategies=strategies,
        judge=judges or None,
        concurrency=args.concurrency,
        progress=not args.no_progress,
        metric=metric,
    )
    out = sys.stderr if args.json else sys.stdout
    several = len(judges) > 1
    for report in result.all_reports:
        _print_report(report, out, with_judge=several)
    for pair in result.agreement:
        print(pair.sentence(), file=out)
    if result.accuracy is not None:
        for row in result.accuracy.rows:
            if row.category is None:
                figure = "n/a" if row.interval is None else str(row.interval)
                print(
                    f"{row.strategy}: accuracy {figure} ({row.correct} right, {row.wrong} wrong, "
                    f"{row.unreadable} unreadable)",
                    file=out,
                )
        for diff in result.accuracy.differences:
            print(f"{diff.strategy} vs {diff.baseline}: {diff.verdict()}", file=out)
    print(f"report: {Path(args.output) / 'report.md'}", file=sys.stderr)
    if args.json:
        every = {"__all__": {"verdicts"}}
        data = result.model_dump(exclude={"reports": every, "other_reports": every})
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    for gap in result.gaps():
        print(f"note: {gap}", file=sys.stderr)
    unread = [r for r in result.all_reports if r.nothing_read]
    for model in dict.fromkeys(r.judge_model for r in unread):
        files = " and ".join(
            str(r.verdicts_file or Path(args.output) / f"verdicts-{r.a}-vs-{r.b}.jsonl")
            for r in unread
            if r.judge_model == model
        )
        message = _no_verdict_read(model or judges[0].model, files)
        print(f"expertprompting: error: {message}", file=sys.stderr)
    if result.failed:
        print("rerun the same command to retry what failed", file=sys.stderr)
        return 1
    return 1 if unread else 0
