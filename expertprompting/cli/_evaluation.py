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


def judge_from_args(args: argparse.Namespace) -> Any:
    """The judge that ``judge`` and ``compare`` run: ``--judge-model``, else as --model resolves."""
    from .._evaluation.judge import Judge
    from .._io.local import is_local_model

    model = args.judge_model
    if model is None:
        model, note = resolve_model(args.model, args.base_url, os.environ, _common.local_available)
        if note:  # compare has shown it already for its answers: notes show once
            NOTES.add(note)
    if not is_local_model(model) and not (
        args.base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
    ):
        raise UsageError(
            f"the judge model {model!r} needs an API key: set OPENAI_API_KEY, or pass "
            "--base-url of an OpenAI-compatible server, or use --judge-model local"
        )
    settings: dict[str, Any] = {}
    if args.base_url and not is_local_model(model):
        settings["base_url"] = args.base_url
    if args.seed is not None:
        settings["seed"] = args.seed
    # --context-window is the judge's in `judge`; in `compare`, only when it judges with the
    # answering model (another --judge-model has a window of its own)
    if args.context_window is not None and (args.subcommand == "judge" or args.judge_model is None):
        settings["context_window"] = args.context_window
    settings.update(retry_setting(args))
    settings.update(timeout_settings(args))
    cache = getattr(args, "judge_cache", None)
    if cache:
        settings["cache"] = cache
    judge = Judge(model=model, **settings)
    NOTES.flush()
    return judge


def _print_report(report: Any, stream: TextIO) -> None:
    print(
        f"{report.a} vs {report.b}: {report.wins} wins, {report.ties} ties, {report.losses} "
        f"losses, {report.unparsed} unparsed of {report.pairs}; adjusted win rate "
        + ("n/a" if report.adjusted_win_rate is None else f"{report.adjusted_win_rate:.1%}")
        + "; score ratio "
        + ("n/a" if report.score_ratio is None else f"{report.score_ratio:.1%}")
        + "; position consistency "
        + ("n/a" if report.position_consistency is None else f"{report.position_consistency:.1%}"),
        file=stream,
    )


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


def cmd_judge(args: argparse.Namespace) -> int:
    judge = judge_from_args(args)
    verdicts = args.output or str(Path(args.a).with_suffix("")) + ".verdicts.jsonl"

    def problem(text: str) -> None:  # as generate reports its unusable input rows
        print(f"expertprompting: skipped input row: {text}", file=sys.stderr)

    report = judge.judge_files(
        args.a,
        args.b,
        verdicts,
        a_name=Path(args.a).stem,
        b_name=Path(args.b).stem,
        concurrency=args.concurrency,
        progress=not args.no_progress,
        on_problem=problem,
    )
    if args.json:
        data = report.model_dump(exclude={"verdicts"})
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_report(report, sys.stdout)
    print(f"verdicts: {verdicts}", file=sys.stderr)
    if report.nothing_read:
        message = _no_verdict_read(judge.model, verdicts)
        print(f"expertprompting: error: {message}", file=sys.stderr)
    if report.failed:
        from .._datasets.generate import default_errors_path

        errors = default_errors_path(verdicts)
        print(
            f"{report.failed} pairs could not be judged (see {errors}); rerun to judge them",
            file=sys.stderr,
        )
        return 1
    return 1 if report.nothing_read else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .._evaluation.compare import compare

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    ep = prompter_from_args(args)
    result = compare(
        ep,
        args.questions,
        args.output,
        strategies=strategies,
        judge=(judge := judge_from_args(args)),
        concurrency=args.concurrency,
        progress=not args.no_progress,
    )
    for report in result.reports:
        _print_report(report, sys.stderr if args.json else sys.stdout)
    print(f"report: {Path(args.output) / 'report.md'}", file=sys.stderr)
    if args.json:
        data = result.model_dump(exclude={"reports": {"__all__": {"verdicts"}}})
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    for gap in result.gaps():
        print(f"note: {gap}", file=sys.stderr)
    unread = [r for r in result.reports if r.nothing_read]
    if unread:
        files = " and ".join(
            str(Path(args.output) / f"verdicts-{r.a}-vs-{r.b}.jsonl") for r in unread
        )
        message = _no_verdict_read(judge.model, files)
        print(f"expertprompting: error: {message}", file=sys.stderr)
    if result.failed:
        print("rerun the same command to retry what failed", file=sys.stderr)
        return 1
    return 1 if unread else 0
