"""The ``expertprompting`` command line.

Subcommands: ``answer``, ``identify``, ``prompt`` (the exact messages, no request),
``generate`` (a whole dataset file, resumably), ``judge``, ``compare``, ``batch`` and ``serve``
(the OpenAI-compatible server). Every
subcommand is a function taking the parsed arguments and returning an exit code;
:func:`build_parser` wires them up, offering each command only the options it uses.

Where each command lives:

- ``answer``, ``identify``, ``prompt``: :mod:`expertprompting.cli._answer`
- ``generate``, ``batch`` (and the ``batch`` sub-parser): :mod:`expertprompting.cli._datasets`
- ``judge``, ``compare``: :mod:`expertprompting.cli._evaluation`
- ``serve``: :mod:`expertprompting.cli._serve`
- what several share (model resolution, :func:`for_cli`, the notes, argument types, option
  groups, errors as one line): :mod:`expertprompting.cli._common`

What the user reads is said in command-line words: library messages pass through
:func:`for_cli` (flags, not Python names), and the library's warnings become one ``note:``
line each, shown once per command and hidden by ``-q``.

Exit codes: 0 success, 1 a failure while running (budget, endpoint, response), 2 a usage error
(bad options, bad settings, no way to reach a model), 130 interrupted.

Start-up stays fast: no module of this package imports the library's heavy parts (the OpenAI
SDK, pydantic, jinja2...) at module level, so ``--version`` and ``--help`` do not load them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from ._answer import cmd_answer, cmd_identify, cmd_prompt
from ._common import (
    DEFAULT_OPENAI_MODEL,
    NOTES,
    Command,
    add_instruction_command,
    add_model_options,
    add_run_options,
    exact_options_only,
    for_cli,
    non_negative_int,
    positive_number,
    resolve_model,
    run_command,
)
from ._common import LOCAL_NOTE as LOCAL_NOTE
from ._common import UsageError as UsageError
from ._datasets import add_batch_parser, cmd_generate
from ._evaluation import add_judge_model_option, add_metric_option, cmd_compare, cmd_judge
from ._serve import add_serve_parser, cmd_serve

# the public names live in _common with the other shared helpers, and are importable from here
__all__ = ["DEFAULT_OPENAI_MODEL", "build_parser", "for_cli", "main", "resolve_model"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="expertprompting",
        description="Answer instructions as the expert each deserves (ExpertPrompting).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="subcommand",
        required=True,
        metavar="COMMAND",
        help="what to do (each command has its own --help)",
    )

    answer = add_instruction_command(
        sub, "answer", cmd_answer, "answer an instruction as its expert"
    )
    answer.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    answer.add_argument(
        "--show-identity",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the expert identity before the answer (default: yes, when the strategy "
        "has one)",
    )
    add_model_options(answer, verbose=True, streams=True)
    identify = add_instruction_command(
        sub, "identify", cmd_identify, "write the expert identity for an instruction"
    )
    add_model_options(identify, strategy=False, templates=False, max_tokens=False, verbose=True)
    prompt = add_instruction_command(
        sub, "prompt", cmd_prompt, "print the exact messages, send nothing"
    )
    prompt.add_argument(
        "--identity", metavar="TEXT", help="identity text to show in the step-2 messages"
    )
    add_model_options(
        prompt,
        sends=False,
        temperature=False,
        seed=False,
        max_tokens=False,
        json_help="print the messages of each step as JSON",
        model_help="model whose tokenizer counts the prompts (no key needed; default: "
        f"$EXPERTPROMPTING_MODEL or {DEFAULT_OPENAI_MODEL})",
    )

    gen = sub.add_parser(
        "generate",
        help="answer every instruction of a JSONL/JSON file, resumably",
        description="Answer every instruction of INPUT (JSONL, or a JSON list such as Alpaca's) "
        "into OUTPUT (JSONL in the ExpertLLaMA layout). Rerun the same command to resume.",
    )
    gen.add_argument("input_file", metavar="INPUT", help="the instructions: JSONL or a JSON list")
    gen.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="the answers file (JSONL)"
    )
    add_run_options(gen, 16)
    gen.add_argument(
        "--rpm", type=positive_number, metavar="N", help="requests per minute, whole run"
    )
    gen.add_argument(
        "--tpm", type=positive_number, metavar="N", help="tokens per minute, whole run"
    )
    gen.add_argument(
        "--limit", type=non_negative_int, metavar="N", help="answer at most this many new items"
    )
    gen.add_argument("--cache", metavar="PATH", help="identity cache: a SQLite file path, or 'off'")
    gen.add_argument("--errors", metavar="FILE", help="failed items (default OUTPUT.errors.jsonl)")
    gen.add_argument(
        "--max-errors",
        type=non_negative_int,
        metavar="N",
        help="stop after more than this many failures",
    )
    add_model_options(gen, json_help="print the run's summary as JSON")
    gen.set_defaults(command=cmd_generate)
    add_batch_parser(sub)

    judge = sub.add_parser(
        "judge",
        help="judge two answer files pairwise, in both orders",
        description="Judge the answers of A.jsonl against B.jsonl (rows matched by id, else by "
        "instruction) with a judge model, each pair in both orders. Resumable via -o.",
    )
    judge.add_argument("a", metavar="A.jsonl", help="answers of system A (e.g. generate's output)")
    judge.add_argument("b", metavar="B.jsonl", help="answers of system B, compared against A")
    add_judge_model_option(judge, "as --model resolves")
    judge.add_argument(
        "-o",
        "--output",
        metavar="VERDICTS",
        help="verdicts file, kept for resuming (default A.verdicts.jsonl)",
    )
    add_run_options(judge, 8)
    judge.add_argument("--judge-cache", metavar="PATH", help="reuse verdicts (SQLite file)")
    add_model_options(
        judge,
        strategy=False,
        templates=False,
        temperature=False,
        max_tokens=False,
        json_help="print the report as JSON",
        model_help="the judge model, when --judge-model is not given",
    )
    judge.set_defaults(command=cmd_judge)

    comp = sub.add_parser(
        "compare",
        help="answer questions with several strategies and judge them against the first",
        description="Answer QUESTIONS with each strategy, judge every strategy against the "
        "first (the baseline), and write report.md with a win/tie/loss chart to -o DIR.",
    )
    comp.add_argument("questions", metavar="QUESTIONS.jsonl", help="the questions (JSONL)")
    comp.add_argument(
        "--strategies",
        default="vanilla,expert",
        metavar="A,B,...",
        help="comma-separated, baseline first (vanilla,expert)",
    )
    add_judge_model_option(comp, "the answering model")
    add_metric_option(comp)
    comp.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="folder for answers and report"
    )
    add_run_options(comp, 8)
    comp.add_argument("--judge-cache", metavar="PATH", help="reuse verdicts (SQLite file)")
    add_model_options(comp, strategy=False, json_help="print the reports as JSON")
    comp.set_defaults(command=cmd_compare)
    add_serve_parser(sub, cmd_serve)
    exact_options_only(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True  # -q: nothing on stderr but errors, so no progress bar either
    command: Command = args.command
    with NOTES.capture(quiet=args.quiet):
        return run_command(command, args)


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
